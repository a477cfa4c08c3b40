package modbus

import (
	"fmt"
	"reflect"
	"testing"
)

func TestPlan(t *testing.T) {
	h := func(a int, typ Type) Register { return Register{Address: a, Function: Holding, Type: typ} }
	in := func(a int, typ Type) Register { return Register{Address: a, Function: Input, Type: typ} }
	coil := func(a int) Register { return Register{Address: a, Function: Coil} }
	disc := func(a int) Register { return Register{Address: a, Function: Discrete} }
	type req struct {
		fn   Function
		addr uint16
		qty  uint16
		regs []int
	}
	cases := []struct {
		name   string
		regs   []Register
		maxGap int
		want   []req
	}{
		{"one register", []Register{h(10, Uint16)}, 8, []req{{Holding, 10, 1, []int{0}}}},
		{"adjacent merge", []Register{h(10, Uint16), h(11, Uint16)}, 0, []req{{Holding, 10, 2, []int{0, 1}}}},
		{"gap of one apart with max_gap 0", []Register{h(10, Uint16), h(12, Uint16)}, 0,
			[]req{{Holding, 10, 1, []int{0}}, {Holding, 12, 1, []int{1}}}},
		{"gap equal to max_gap merges", []Register{h(0, Uint16), h(9, Uint16)}, 8, []req{{Holding, 0, 10, []int{0, 1}}}},
		{"gap above max_gap splits", []Register{h(0, Uint16), h(10, Uint16)}, 8,
			[]req{{Holding, 0, 1, []int{0}}, {Holding, 10, 1, []int{1}}}},
		{"unsorted input sorted by address", []Register{h(15, Uint16), h(5, Float32), h(7, Uint16)}, 8,
			[]req{{Holding, 5, 11, []int{1, 2, 0}}}},
		{"wide types count their words", []Register{h(0, Float64), h(4, Int32), h(14, Uint16)}, 8,
			[]req{{Holding, 0, 15, []int{0, 1, 2}}}},
		{"overlap: one register read as two types", []Register{h(100, Uint32), h(100, Uint16), h(101, Int16)}, 0,
			[]req{{Holding, 100, 2, []int{1, 0, 2}}}},
		{"overlap contained does not widen", []Register{h(0, Float64), h(1, Uint16)}, 0, []req{{Holding, 0, 4, []int{0, 1}}}},
		{"tables never merge", []Register{h(0, Uint16), in(0, Uint16), coil(0), disc(0)}, 8,
			[]req{{Coil, 0, 1, []int{2}}, {Discrete, 0, 1, []int{3}}, {Holding, 0, 1, []int{0}}, {Input, 0, 1, []int{1}}}},
		{"125 registers fit one request", []Register{h(0, Uint16), h(124, Uint16)}, 200, []req{{Holding, 0, 125, []int{0, 1}}}},
		{"126 registers need two", []Register{h(0, Uint16), h(125, Uint16)}, 200,
			[]req{{Holding, 0, 1, []int{0}}, {Holding, 125, 1, []int{1}}}},
		{"a float32 ending at the limit fits", []Register{h(0, Uint16), h(123, Float32)}, 200,
			[]req{{Holding, 0, 125, []int{0, 1}}}},
		{"a float32 never splits at the limit", []Register{h(0, Uint16), h(124, Float32), h(125, Uint16)}, 200,
			[]req{{Holding, 0, 1, []int{0}}, {Holding, 124, 2, []int{1, 2}}}},
		{"a float64 never splits at the limit", []Register{h(0, Uint16), h(122, Float64)}, 200,
			[]req{{Holding, 0, 1, []int{0}}, {Holding, 122, 4, []int{1}}}},
		{"2000 coils fit one request", []Register{coil(0), coil(1999)}, 2000, []req{{Coil, 0, 2000, []int{0, 1}}}},
		{"2001 coils need two", []Register{coil(0), coil(2000)}, 2000,
			[]req{{Coil, 0, 1, []int{0}}, {Coil, 2000, 1, []int{1}}}},
		{"discrete gap counted in bits", []Register{disc(0), disc(9), disc(30)}, 8,
			[]req{{Discrete, 0, 10, []int{0, 1}}, {Discrete, 30, 1, []int{2}}}},
		{"default function is holding", []Register{{Address: 3}}, 8, []req{{Holding, 3, 1, []int{0}}}},
		{"top of the address space", []Register{h(65532, Float64)}, 8, []req{{Holding, 65532, 4, []int{0}}}},
		{"empty", nil, 8, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []req
			for _, q := range Plan(c.regs, c.maxGap) {
				got = append(got, req{q.Function, q.Address, q.Quantity, q.Registers})
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("Plan = %+v\nwant   %+v", got, c.want)
			}
		})
	}
}

// TestPlanCoversEveryRegister checks the invariants over a larger map: each register
// read by exactly one request that holds it whole, no request above the limit.
func TestPlanCoversEveryRegister(t *testing.T) {
	var regs []Register
	types := []Type{Uint16, Int32, Float64, Float32, Int16}
	for i := range 400 {
		regs = append(regs, Register{Name: fmt.Sprint(i), Address: (i * 37) % 3000, Function: Holding, Type: types[i%len(types)]})
		regs = append(regs, Register{Name: fmt.Sprint("c", i), Address: (i * 53) % 9000, Function: Coil})
	}
	for _, gap := range []int{0, 1, 8, 50, 2000} {
		seen := make([]int, len(regs))
		for _, q := range Plan(regs, gap) {
			limit := maxWords
			if q.Function.bits() {
				limit = maxBits
			}
			if q.Quantity == 0 || int(q.Quantity) > limit {
				t.Fatalf("gap %d: %s has quantity %d", gap, q, q.Quantity)
			}
			for _, i := range q.Registers {
				seen[i]++
				r := &regs[i]
				if r.function() != q.Function || r.Address < int(q.Address) || r.Address+r.width() > int(q.Address)+int(q.Quantity) {
					t.Fatalf("gap %d: register %d (%s at %d, %d wide) not inside %s", gap, i, r.function(), r.Address, r.width(), q)
				}
			}
		}
		for i, n := range seen {
			if n != 1 {
				t.Fatalf("gap %d: register %d read by %d requests", gap, i, n)
			}
		}
	}
}

// TestCountExpands: a register with a count is a block of values read in as few
// requests as the planner can, named by index.
func TestCountExpands(t *testing.T) {
	regs := expand([]Register{
		{Name: "n", Address: 200},
		{Name: "x", Address: 201, Type: Int16, Count: 60},
		{Name: "f", Address: 300, Type: Float32, Count: 2},
	})
	if len(regs) != 63 || regs[1].Name != "x.0" || regs[60].Name != "x.59" || regs[60].Address != 260 {
		t.Fatalf("expanded to %d registers, %+v ... %+v", len(regs), regs[1], regs[60])
	}
	if regs[61].Name != "f.0" || regs[62].Address != 302 {
		t.Errorf("float32 block: %+v %+v, want two-register strides", regs[61], regs[62])
	}
	if p := Plan(regs[:61], 0); len(p) != 1 || p[0].Address != 200 || p[0].Quantity != 61 {
		t.Errorf("plan %+v, want one request of 61 registers from 200", p)
	}
	bad := Register{Name: "w", Address: 65500, Type: Int32, Count: 20}
	if errs := bad.validate(0, map[string]int{}); len(errs) == 0 {
		t.Error("a block past address 65535 was accepted")
	}
}
