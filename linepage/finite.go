package linepage

import "math"

// finite is f, or nil where JSON cannot carry it.
func finite(f float64) *float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return &f
}
