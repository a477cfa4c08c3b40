package config

import (
	"fmt"

	"github.com/edgedrun/edged/window"
)

func (v *validation) window(path string, w *window.Config) {
	if w == nil {
		return
	}
	if len(w.Features) == 0 {
		v.fail("%s.features: empty; name the features the model takes (mean, std, rms, peak, crest, kurtosis, skewness, band)", path)
	}
	if err := w.Validate(); err != nil {
		for _, e := range splitErrors(err) {
			v.fail("%s.%v", path, e)
		}
	}
}

// splitErrors lists the errors errors.Join put together, so each gets its own line
// and path.
func splitErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{fmt.Errorf("%w", err)}
}
