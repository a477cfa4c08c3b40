// Package sparkplug encodes Eclipse Sparkplug B payloads (the Payload message of the
// specification's sparkplug_b.proto) and names Sparkplug B topics, for plants whose
// SCADA (Ignition and others) expects Sparkplug B instead of edged's JSON.
//
// Only what an edge node without devices sends is covered: NBIRTH, NDATA and NDEATH
// payloads made of scalar metrics. The encoding is written by hand with protowire: the
// wire format is small and fixed by the specification, and no generated code is needed.
package sparkplug

import (
	"math"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Namespace is the first topic level of Sparkplug B.
const Namespace = "spBv1.0"

// Message types an edge node publishes.
const (
	NBIRTH = "NBIRTH"
	NDATA  = "NDATA"
	NDEATH = "NDEATH"
)

// Topic is spBv1.0/{groupID}/{msgType}/{edgeNodeID}.
func Topic(groupID, msgType, edgeNodeID string) string {
	return Namespace + "/" + groupID + "/" + msgType + "/" + edgeNodeID
}

// DataType is a metric's Sparkplug B data type.
type DataType uint32

// Data types, numbered as in the Sparkplug B specification.
const (
	Int32    DataType = 3
	Int64    DataType = 4
	UInt64   DataType = 8
	Float    DataType = 9
	Double   DataType = 10
	Boolean  DataType = 11
	String   DataType = 12
	DateTime DataType = 13
)

// BdSeqMetric is the name of the birth/death sequence metric.
const BdSeqMetric = "bdSeq"

// RebirthMetric is the node control metric a host writes to ask for a new NBIRTH.
const RebirthMetric = "Node Control/Rebirth"

// Metric is one scalar metric. The value field that matches Type is encoded: Int for
// Int32 (as the specification's uint32 int_value, two's complement), Int64 and DateTime
// (milliseconds since the epoch) as long_value, Uint for UInt64, Float64 for Float and
// Double, Bool for Boolean, Str for String. Null sends is_null and no value, as a
// birth does for a metric it declares without a value yet.
type Metric struct {
	Name string
	// Timestamp is in milliseconds since the epoch; 0 leaves it out.
	Timestamp uint64
	Type      DataType
	Null      bool
	Int       int64
	Uint      uint64
	Float64   float64
	Bool      bool
	Str       string
}

// Payload is a Sparkplug B payload.
type Payload struct {
	// Timestamp is in milliseconds since the epoch.
	Timestamp uint64
	Metrics   []Metric
	// Seq is 0..255; NDEATH carries none (HasSeq false).
	Seq    uint64
	HasSeq bool
}

// Millis is t in milliseconds since the epoch, 0 for the zero time.
func Millis(t time.Time) uint64 {
	if t.IsZero() || t.UnixMilli() < 0 {
		return 0
	}
	return uint64(t.UnixMilli())
}

// Field numbers of sparkplug_b.proto.
const (
	payloadTimestamp = 1
	payloadMetrics   = 2
	payloadSeq       = 3

	metricName     = 1
	metricTime     = 3
	metricDatatype = 4
	metricIsNull   = 7
	metricInt      = 10
	metricLong     = 11
	metricFloat    = 12
	metricDouble   = 13
	metricBool     = 14
	metricString   = 15
)

// Append appends p's protobuf encoding to dst.
func (p *Payload) Append(dst []byte) []byte {
	dst = protowire.AppendTag(dst, payloadTimestamp, protowire.VarintType)
	dst = protowire.AppendVarint(dst, p.Timestamp)
	var buf []byte
	for i := range p.Metrics {
		buf = p.Metrics[i].append(buf[:0])
		dst = protowire.AppendTag(dst, payloadMetrics, protowire.BytesType)
		dst = protowire.AppendBytes(dst, buf)
	}
	if p.HasSeq {
		dst = protowire.AppendTag(dst, payloadSeq, protowire.VarintType)
		dst = protowire.AppendVarint(dst, p.Seq)
	}
	return dst
}

// Marshal is Append to a new slice.
func (p *Payload) Marshal() []byte { return p.Append(nil) }

func (m *Metric) append(dst []byte) []byte {
	dst = protowire.AppendTag(dst, metricName, protowire.BytesType)
	dst = protowire.AppendString(dst, m.Name)
	if m.Timestamp != 0 {
		dst = protowire.AppendTag(dst, metricTime, protowire.VarintType)
		dst = protowire.AppendVarint(dst, m.Timestamp)
	}
	dst = protowire.AppendTag(dst, metricDatatype, protowire.VarintType)
	dst = protowire.AppendVarint(dst, uint64(m.Type))
	if m.Null {
		dst = protowire.AppendTag(dst, metricIsNull, protowire.VarintType)
		return protowire.AppendVarint(dst, 1)
	}
	switch m.Type {
	case Int32:
		dst = protowire.AppendTag(dst, metricInt, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(uint32(int32(m.Int))))
	case Int64, DateTime:
		dst = protowire.AppendTag(dst, metricLong, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(m.Int))
	case UInt64:
		dst = protowire.AppendTag(dst, metricLong, protowire.VarintType)
		dst = protowire.AppendVarint(dst, m.Uint)
	case Float:
		dst = protowire.AppendTag(dst, metricFloat, protowire.Fixed32Type)
		dst = protowire.AppendFixed32(dst, math.Float32bits(float32(m.Float64)))
	case Double:
		dst = protowire.AppendTag(dst, metricDouble, protowire.Fixed64Type)
		dst = protowire.AppendFixed64(dst, math.Float64bits(m.Float64))
	case Boolean:
		dst = protowire.AppendTag(dst, metricBool, protowire.VarintType)
		dst = protowire.AppendVarint(dst, protowire.EncodeBool(m.Bool))
	case String:
		dst = protowire.AppendTag(dst, metricString, protowire.BytesType)
		dst = protowire.AppendString(dst, m.Str)
	}
	return dst
}

// Death is the NDEATH payload: the bdSeq metric only, no seq.
func Death(bdSeq uint64, now time.Time) []byte {
	p := Payload{Timestamp: Millis(now), Metrics: []Metric{{Name: BdSeqMetric, Type: Int64, Int: int64(bdSeq)}}}
	return p.Marshal()
}
