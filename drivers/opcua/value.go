package opcua

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/gopcua/opcua/ua"
)

// toFloat turns a node's value into a reading's scalar: booleans are 0/1, every numeric
// type is widened; anything else is not something a model can take.
func toFloat(v *ua.Variant) (float64, error) {
	if v == nil {
		return 0, fmt.Errorf("has no value")
	}
	if v.ArrayLength() > 0 {
		return 0, fmt.Errorf("is an array of %s, not a number or bool", v.Type())
	}
	switch x := v.Value().(type) {
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case int8:
		return float64(x), nil
	case uint8:
		return float64(x), nil
	case int16:
		return float64(x), nil
	case uint16:
		return float64(x), nil
	case int32:
		return float64(x), nil
	case uint32:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case uint64:
		return float64(x), nil
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	case nil:
		return 0, fmt.Errorf("has no value")
	}
	return 0, fmt.Errorf("is a %s (%v), not a number or bool", v.Type(), v.Value())
}

// partIDString renders a part id tag's value as the reading's PartID.
func partIDString(v *ua.Variant) string {
	if v == nil {
		return ""
	}
	switch x := v.Value().(type) {
	case nil:
		return ""
	case string:
		return x
	case []byte:
		return string(x)
	case *ua.LocalizedText:
		if x == nil {
			return ""
		}
		return x.Text
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	return fmt.Sprint(v.Value())
}

// builtinType maps a DataType node id in namespace 0 to the built-in type it names
// (Boolean i=1 .. ByteString i=15, whose numbers equal the variant type ids).
func builtinType(dt *ua.NodeID) (ua.TypeID, bool) {
	if dt == nil || dt.Namespace() != 0 || dt.Type() != ua.NodeIDTypeTwoByte && dt.Type() != ua.NodeIDTypeFourByte && dt.Type() != ua.NodeIDTypeNumeric {
		return 0, false
	}
	n := dt.IntID()
	if n >= uint32(ua.TypeIDBoolean) && n <= uint32(ua.TypeIDByteString) {
		return ua.TypeID(n), true
	}
	return 0, false
}

// writable reports whether values of type t can be written by the driver.
func writable(t ua.TypeID) bool {
	switch t {
	case ua.TypeIDBoolean, ua.TypeIDSByte, ua.TypeIDByte, ua.TypeIDInt16, ua.TypeIDUint16,
		ua.TypeIDInt32, ua.TypeIDUint32, ua.TypeIDInt64, ua.TypeIDUint64,
		ua.TypeIDFloat, ua.TypeIDDouble, ua.TypeIDString:
		return true
	}
	return false
}

// checkWriteValue refuses value kinds a Write may not carry.
func checkWriteValue(v any) error {
	switch v.(type) {
	case bool, int64, int, float64, string:
		return nil
	}
	return fmt.Errorf("value %v is a %T, not a bool, int64, float64 or string", v, v)
}

// convert makes a variant of type t from a write's value; a value that does not fit
// (out of range, fractional for an integer, unparsable text) is an error naming it.
func convert(v any, t ua.TypeID) (*ua.Variant, error) {
	if i, ok := v.(int); ok {
		v = int64(i)
	}
	switch t {
	case ua.TypeIDBoolean:
		switch x := v.(type) {
		case bool:
			return ua.NewVariant(x)
		case int64:
			if x == 0 || x == 1 {
				return ua.NewVariant(x == 1)
			}
		case float64:
			if x == 0 || x == 1 {
				return ua.NewVariant(x == 1)
			}
		case string:
			if b, err := strconv.ParseBool(x); err == nil {
				return ua.NewVariant(b)
			}
		}
		return nil, fmt.Errorf("value %v (%T) does not fit type Boolean", v, v)
	case ua.TypeIDString:
		switch x := v.(type) {
		case string:
			return ua.NewVariant(x)
		case bool:
			return ua.NewVariant(strconv.FormatBool(x))
		case int64:
			return ua.NewVariant(strconv.FormatInt(x, 10))
		case float64:
			return ua.NewVariant(strconv.FormatFloat(x, 'g', -1, 64))
		}
	case ua.TypeIDFloat, ua.TypeIDDouble:
		var f float64
		switch x := v.(type) {
		case bool:
			if x {
				f = 1
			}
		case int64:
			f = float64(x)
		case float64:
			f = x
		case string:
			p, err := strconv.ParseFloat(x, 64)
			if err != nil {
				return nil, fmt.Errorf("value %q (string) does not fit type %s", x, typeName(t))
			}
			f = p
		default:
			return nil, fmt.Errorf("value %v (%T) does not fit type %s", v, v, typeName(t))
		}
		if t == ua.TypeIDFloat {
			if !math.IsNaN(f) && !math.IsInf(f, 0) && math.Abs(f) > math.MaxFloat32 {
				return nil, fmt.Errorf("value %v is out of range for type Float", v)
			}
			return ua.NewVariant(float32(f))
		}
		return ua.NewVariant(f)
	default:
		lo, hi, ok := intRange(t)
		if !ok {
			return nil, fmt.Errorf("node type %s is not writable (want a number, Boolean or String)", typeName(t))
		}
		var i int64
		var u uint64
		unsigned := false
		switch x := v.(type) {
		case bool:
			if x {
				i = 1
			}
		case int64:
			i = x
		case float64:
			if x != math.Trunc(x) || math.IsNaN(x) {
				return nil, fmt.Errorf("value %v is not a whole number, so does not fit type %s", x, typeName(t))
			}
			if x >= 0 && x >= math.MaxInt64 {
				if x >= math.MaxUint64 {
					return nil, fmt.Errorf("value %v is out of range for type %s", x, typeName(t))
				}
				u, unsigned = uint64(x), true
			} else if x < math.MinInt64 {
				return nil, fmt.Errorf("value %v is out of range for type %s", x, typeName(t))
			} else {
				i = int64(x)
			}
		case string:
			p, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				pu, uerr := strconv.ParseUint(x, 10, 64)
				if uerr != nil {
					return nil, fmt.Errorf("value %q (string) is not a whole number, so does not fit type %s", x, typeName(t))
				}
				u, unsigned = pu, true
			} else {
				i = p
			}
		default:
			return nil, fmt.Errorf("value %v (%T) does not fit type %s", v, v, typeName(t))
		}
		if unsigned {
			if t != ua.TypeIDUint64 {
				return nil, fmt.Errorf("value %v is out of range for type %s", v, typeName(t))
			}
			return ua.NewVariant(u)
		}
		if t == ua.TypeIDUint64 {
			if i < 0 {
				return nil, fmt.Errorf("value %v is out of range for type %s", v, typeName(t))
			}
			return ua.NewVariant(uint64(i))
		}
		if i < lo || i > hi {
			return nil, fmt.Errorf("value %v is out of range %d..%d for type %s", v, lo, hi, typeName(t))
		}
		switch t {
		case ua.TypeIDSByte:
			return ua.NewVariant(int8(i))
		case ua.TypeIDByte:
			return ua.NewVariant(uint8(i))
		case ua.TypeIDInt16:
			return ua.NewVariant(int16(i))
		case ua.TypeIDUint16:
			return ua.NewVariant(uint16(i))
		case ua.TypeIDInt32:
			return ua.NewVariant(int32(i))
		case ua.TypeIDUint32:
			return ua.NewVariant(uint32(i))
		default:
			return ua.NewVariant(i)
		}
	}
	return nil, fmt.Errorf("value %v (%T) does not fit type %s", v, v, typeName(t))
}

func intRange(t ua.TypeID) (lo, hi int64, ok bool) {
	switch t {
	case ua.TypeIDSByte:
		return math.MinInt8, math.MaxInt8, true
	case ua.TypeIDByte:
		return 0, math.MaxUint8, true
	case ua.TypeIDInt16:
		return math.MinInt16, math.MaxInt16, true
	case ua.TypeIDUint16:
		return 0, math.MaxUint16, true
	case ua.TypeIDInt32:
		return math.MinInt32, math.MaxInt32, true
	case ua.TypeIDUint32:
		return 0, math.MaxUint32, true
	case ua.TypeIDInt64:
		return math.MinInt64, math.MaxInt64, true
	case ua.TypeIDUint64:
		return 0, math.MaxInt64, true
	}
	return 0, 0, false
}

// typeName is the OPC UA name of a built-in type: "Int16", not "TypeIDInt16".
func typeName(t ua.TypeID) string {
	s := strings.TrimPrefix(t.String(), "TypeID")
	if strings.HasPrefix(s, "Uint") {
		s = "UInt" + s[4:]
	}
	return s
}
