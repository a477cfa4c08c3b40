package modbus

import (
	"cmp"
	"fmt"
	"slices"
)

// The most one request may read, by the Modbus specification.
const (
	maxWords = 125
	maxBits  = 2000
)

// Request is one read of a contiguous range of one table.
type Request struct {
	Function Function
	Address  uint16
	Quantity uint16
	// Registers are the indexes, in the list given to Plan, of the registers this
	// request reads, in address order.
	Registers []int
}

// String names the range as the error messages do: "holding 100..109".
func (q Request) String() string {
	return fmt.Sprintf("%s %d..%d", q.Function, q.Address, int(q.Address)+int(q.Quantity)-1)
}

// functionOrder fixes the order of a poll's requests, so plans compare stably.
var functionOrder = []Function{Coil, Discrete, Holding, Input}

// Plan groups the registers into the fewest requests per table: sorted by address, two
// ranges share a request when at most maxGap unused registers (bits, for coils and
// discrete inputs) lie between them and the request stays within 125 registers (2000
// bits). A value never splits across requests. The registers must be valid (see
// Config.Validate).
func Plan(regs []Register, maxGap int) []Request {
	var out []Request
	for _, fn := range functionOrder {
		var idx []int
		for i := range regs {
			if regs[i].function() == fn {
				idx = append(idx, i)
			}
		}
		slices.SortStableFunc(idx, func(a, b int) int {
			if c := cmp.Compare(regs[a].Address, regs[b].Address); c != 0 {
				return c
			}
			return cmp.Compare(regs[a].width(), regs[b].width())
		})
		limit := maxWords
		if fn.bits() {
			limit = maxBits
		}
		var cur *Request
		end := 0 // one past the last address cur reads
		for _, i := range idx {
			a, w := regs[i].Address, regs[i].width()
			if cur != nil && a-end <= maxGap && max(end, a+w)-int(cur.Address) <= limit {
				end = max(end, a+w)
				cur.Quantity = uint16(end - int(cur.Address))
				cur.Registers = append(cur.Registers, i)
				continue
			}
			out = append(out, Request{Function: fn, Address: uint16(a), Quantity: uint16(w), Registers: []int{i}})
			cur = &out[len(out)-1]
			end = a + w
		}
	}
	return out
}
