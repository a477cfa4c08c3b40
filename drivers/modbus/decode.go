package modbus

import (
	"fmt"
	"math"
)

// point is a register with its defaults and the device's orders applied.
type point struct {
	name          string
	fn            Function
	typ           Type
	address       int
	byteOrder     Order
	wordOrder     Order
	scale, offset float64
}

func compile(regs []Register, byteOrder, wordOrder Order) []point {
	ps := make([]point, len(regs))
	for i := range regs {
		r := &regs[i]
		p := point{
			name: r.Name, fn: r.function(), typ: r.typ(), address: r.Address,
			byteOrder: byteOrder, wordOrder: wordOrder, scale: r.scale(), offset: r.Offset,
		}
		if r.ByteOrder != "" {
			p.byteOrder = r.ByteOrder
		}
		if r.WordOrder != "" {
			p.wordOrder = r.WordOrder
		}
		ps[i] = p
	}
	return ps
}

// rawBits assembles the n words at the start of b into one integer, most significant
// word first, honouring both orders. b must hold 2*n bytes.
func rawBits(b []byte, n int, byteOrder, wordOrder Order) uint64 {
	var v uint64
	for i := range n {
		j := i
		if wordOrder == Little {
			j = n - 1 - i
		}
		hi, lo := b[2*j], b[2*j+1]
		if byteOrder == Little {
			hi, lo = lo, hi
		}
		v = v<<16 | uint64(hi)<<8 | uint64(lo)
	}
	return v
}

// decodeValue reads a value of type t from the start of b, the bytes of a register
// read response.
func decodeValue(t Type, byteOrder, wordOrder Order, b []byte) (float64, error) {
	n := t.words()
	if n == 0 {
		return 0, fmt.Errorf("type %q is not a register type", string(t))
	}
	if len(b) < 2*n {
		return 0, fmt.Errorf("%s needs %d bytes, response has %d", t, 2*n, len(b))
	}
	v := rawBits(b, n, byteOrder, wordOrder)
	switch t {
	case Int16:
		return float64(int16(v)), nil
	case Uint16, Uint32:
		return float64(v), nil
	case Int32:
		return float64(int32(v)), nil
	case Float32:
		return float64(math.Float32frombits(uint32(v))), nil
	default: // Float64
		return math.Float64frombits(v), nil
	}
}

// encodeValue is decodeValue's inverse for writes: v must be representable in t
// exactly (integers in range; float32 within its range).
func encodeValue(t Type, byteOrder, wordOrder Order, v float64) ([]byte, error) {
	var raw uint64
	switch t {
	case Int16, Uint16, Int32, Uint32:
		lo, hi := intRange(t)
		if v != math.Trunc(v) || v < lo || v > hi {
			return nil, fmt.Errorf("%v does not fit %s (%v..%v, whole numbers)", v, t, lo, hi)
		}
		raw = uint64(int64(v))
	case Float32:
		if !math.IsInf(v, 0) && !math.IsNaN(v) && math.Abs(v) > math.MaxFloat32 {
			return nil, fmt.Errorf("%v does not fit float32", v)
		}
		raw = uint64(math.Float32bits(float32(v)))
	case Float64:
		raw = math.Float64bits(v)
	default:
		return nil, fmt.Errorf("type %q is not a register type", string(t))
	}
	n := t.words()
	b := make([]byte, 2*n)
	for i := range n {
		// Word i counted from the most significant one.
		w := uint16(raw >> (16 * (n - 1 - i)))
		j := i
		if wordOrder == Little {
			j = n - 1 - i
		}
		hi, lo := byte(w>>8), byte(w)
		if byteOrder == Little {
			hi, lo = lo, hi
		}
		b[2*j], b[2*j+1] = hi, lo
	}
	return b, nil
}

func intRange(t Type) (lo, hi float64) {
	switch t {
	case Int16:
		return math.MinInt16, math.MaxInt16
	case Uint16:
		return 0, math.MaxUint16
	case Int32:
		return math.MinInt32, math.MaxInt32
	default: // Uint32
		return 0, math.MaxUint32
	}
}

// decodeResponse reads the values of the request's registers from the data of its
// response (register bytes, or packed bits) into out, scaled. The data comes from the
// network, so its length is checked before anything is sliced.
func decodeResponse(q *Request, ps []point, data []byte, out map[string]float64) error {
	if q.Function.bits() {
		if want := (int(q.Quantity) + 7) / 8; len(data) != want {
			return fmt.Errorf("response has %d bytes for %d bits, want %d", len(data), q.Quantity, want)
		}
	} else if want := 2 * int(q.Quantity); len(data) != want {
		return fmt.Errorf("response has %d bytes for %d registers, want %d", len(data), q.Quantity, want)
	}
	for _, i := range q.Registers {
		if i < 0 || i >= len(ps) {
			return fmt.Errorf("request %s names register %d of %d", q, i, len(ps))
		}
		p := &ps[i]
		k := p.address - int(q.Address)
		if k < 0 || k >= int(q.Quantity) {
			return fmt.Errorf("register %q at %d lies outside request %s", p.name, p.address, q)
		}
		var raw float64
		if q.Function.bits() {
			raw = float64(data[k/8] >> (k % 8) & 1)
		} else {
			v, err := decodeValue(p.typ, p.byteOrder, p.wordOrder, data[2*k:])
			if err != nil {
				return fmt.Errorf("register %q at %d: %w", p.name, p.address, err)
			}
			raw = v
		}
		out[p.name] = raw*p.scale + p.offset
	}
	return nil
}
