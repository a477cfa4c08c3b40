package modbus

import (
	"math"
	"testing"
)

func TestDecodeValue(t *testing.T) {
	cases := []struct {
		typ      Type
		bo, wo   Order
		b        []byte
		want     float64
		wantBits bool // compare bit patterns (NaN)
	}{
		{Uint16, Big, Big, []byte{0x12, 0x34}, 0x1234, false},
		{Uint16, Little, Big, []byte{0x34, 0x12}, 0x1234, false},
		{Int16, Big, Big, []byte{0xFF, 0xFE}, -2, false},
		{Int16, Little, Little, []byte{0xFE, 0xFF}, -2, false},
		{Uint32, Big, Big, []byte{0x00, 0x01, 0x00, 0x02}, 0x10002, false},
		{Uint32, Big, Little, []byte{0x00, 0x02, 0x00, 0x01}, 0x10002, false},
		{Uint32, Little, Big, []byte{0x01, 0x00, 0x02, 0x00}, 0x10002, false},
		{Uint32, Little, Little, []byte{0x02, 0x00, 0x01, 0x00}, 0x10002, false},
		{Int32, Big, Big, []byte{0xFF, 0xFF, 0xFF, 0x85}, -123, false},
		{Float32, Big, Big, []byte{0x41, 0xAC, 0x00, 0x00}, 21.5, false},
		{Float32, Big, Little, []byte{0x00, 0x00, 0x41, 0xAC}, 21.5, false},
		{Float32, Little, Big, []byte{0xAC, 0x41, 0x00, 0x00}, 21.5, false},
		{Float32, Little, Little, []byte{0x00, 0x00, 0xAC, 0x41}, 21.5, false},
		{Float64, Big, Big, []byte{0x40, 0x09, 0x21, 0xFB, 0x54, 0x44, 0x2D, 0x18}, math.Pi, false},
		{Float64, Big, Little, []byte{0x2D, 0x18, 0x54, 0x44, 0x21, 0xFB, 0x40, 0x09}, math.Pi, false},
		{Float64, Little, Little, []byte{0x18, 0x2D, 0x44, 0x54, 0xFB, 0x21, 0x09, 0x40}, math.Pi, false},
	}
	for _, c := range cases {
		got, err := decodeValue(c.typ, c.bo, c.wo, c.b)
		if err != nil || got != c.want {
			t.Errorf("decode %s %s/%s % x = %v, %v; want %v", c.typ, c.bo, c.wo, c.b, got, err, c.want)
		}
		enc, err := encodeValue(c.typ, c.bo, c.wo, c.want)
		if err != nil || string(enc) != string(c.b) {
			t.Errorf("encode %s %s/%s %v = % x, %v; want % x", c.typ, c.bo, c.wo, c.want, enc, err, c.b)
		}
	}
	if _, err := decodeValue(Float64, Big, Big, make([]byte, 7)); err == nil {
		t.Error("decoded a float64 from 7 bytes")
	}
}

func TestEncodeValueRefuses(t *testing.T) {
	for _, c := range []struct {
		typ Type
		v   float64
	}{
		{Uint16, -1}, {Uint16, 65536}, {Uint16, 1.5}, {Int16, 32768}, {Int16, -32769},
		{Uint32, 4294967296}, {Int32, 2147483648}, {Int32, math.NaN()}, {Uint16, math.Inf(1)},
		{Float32, 1e39}, {Bool, 1},
	} {
		if b, err := encodeValue(c.typ, Big, Big, c.v); err == nil {
			t.Errorf("encode %s %v = % x, want an error", c.typ, c.v, b)
		}
	}
}

// fuzzMap is every type in both orders, packed so that the plan has one request per
// table, for the decoding fuzz target.
func fuzzMap() ([]Register, []point, []Request) {
	var regs []Register
	a := 0
	for _, typ := range []Type{Int16, Uint16, Int32, Uint32, Float32, Float64} {
		for _, bo := range []Order{Big, Little} {
			for _, wo := range []Order{Big, Little} {
				regs = append(regs, Register{Name: string(typ) + string(bo) + string(wo), Address: a, Type: typ, ByteOrder: bo, WordOrder: wo})
				regs = append(regs, Register{Name: "in" + string(typ) + string(bo) + string(wo), Address: a, Function: Input, Type: typ, ByteOrder: bo, WordOrder: wo})
				a += typ.words()
			}
		}
	}
	for i := range 20 {
		regs = append(regs, Register{Name: "coil" + string(rune('a'+i)), Address: i * 3, Function: Coil})
	}
	return regs, compile(regs, Big, Big), Plan(regs, 8)
}

// FuzzDecodeResponse feeds response data from the network, of any length, to the
// decoding of every planned request: it must fail cleanly on a wrong length and give
// a value for every register on a right one.
func FuzzDecodeResponse(f *testing.F) {
	f.Add([]byte{}, uint8(0))
	f.Add([]byte{0x41, 0xAC, 0x00, 0x00}, uint8(2))
	f.Add(make([]byte, 8), uint8(1))
	f.Add(make([]byte, 2*72), uint8(1))
	f.Add(make([]byte, 2*72), uint8(2))
	f.Add([]byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, uint8(0))
	regs, ps, plan := fuzzMap()
	f.Fuzz(func(t *testing.T, data []byte, sel uint8) {
		q := &plan[int(sel)%len(plan)]
		// Stretch or cut the input to the right length half the time, so decoding
		// proper is fuzzed too and not only the length check.
		want := 2 * int(q.Quantity)
		if q.Function.bits() {
			want = (int(q.Quantity) + 7) / 8
		}
		if sel&0x80 != 0 {
			data = append(data, make([]byte, max(0, want-len(data)))...)[:want]
		}
		out := map[string]float64{}
		err := decodeResponse(q, ps, data, out)
		if len(data) != want {
			if err == nil {
				t.Fatalf("%s: %d bytes decoded, want %d", q, len(data), want)
			}
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if len(out) != len(q.Registers) {
			t.Fatalf("%s: %d values for %d registers", q, len(out), len(q.Registers))
		}
		for _, i := range q.Registers {
			v := out[regs[i].Name]
			if typ := regs[i].typ(); typ != Float32 && typ != Float64 {
				if v != math.Trunc(v) {
					t.Fatalf("%s: %s = %v, not a whole number", q, regs[i].Name, v)
				}
				if typ != Bool {
					// Whole-number types round trip through their encoding.
					p := &ps[i]
					b, err := encodeValue(typ, p.byteOrder, p.wordOrder, v)
					k := 2 * (p.address - int(q.Address))
					if err != nil || string(b) != string(data[k:k+len(b)]) {
						t.Fatalf("%s: %s = %v encodes to % x, %v; read from % x", q, regs[i].Name, v, b, err, data[k:k+len(b)])
					}
				}
			}
		}
	})
}

// FuzzCheckHeader feeds response headers from the network to the MBAP header check.
func FuzzCheckHeader(f *testing.F) {
	req := []byte{0x00, 0x07, 0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x00, 0x00, 0x00, 0x0A}
	f.Add([]byte{0x00, 0x07, 0x00, 0x00, 0x00, 0x17, 0x01})
	f.Add([]byte{0x00, 0x08, 0x00, 0x00, 0x00, 0x17, 0x01})
	f.Add([]byte{0x00, 0x07, 0x00, 0x00, 0xFF, 0xFF, 0x01})
	f.Add([]byte{0x00, 0x07})
	f.Fuzz(func(t *testing.T, hdr []byte) {
		n, err := checkHeader(req, hdr)
		if err != nil {
			return
		}
		if n < minLength || n > maxLength || hdr[0] != req[0] || hdr[1] != req[1] || hdr[6] != req[6] {
			t.Fatalf("header % x accepted with length %d", hdr, n)
		}
	})
}
