// Package spbtest decodes Sparkplug B payloads for tests, with protobuf's own decoder
// and a descriptor of the specification's sparkplug_b.proto built in code, so that the
// hand encoding of package sparkplug is checked independently of it.
package spbtest

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// PayloadDesc is the Payload message of the specification's sparkplug_b.proto (the
// fields edged uses, numbered and typed as there), built from a descriptor so that the
// hand encoding is checked by protobuf's own decoder.
func PayloadDesc(t testing.TB) protoreflect.MessageDescriptor {
	t.Helper()
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
	rep := descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	field := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, label descriptorpb.FieldDescriptorProto_Label, typeName string) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(), Label: label.Enum()}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		return f
	}
	const (
		u64 = descriptorpb.FieldDescriptorProto_TYPE_UINT64
		u32 = descriptorpb.FieldDescriptorProto_TYPE_UINT32
		str = descriptorpb.FieldDescriptorProto_TYPE_STRING
		bl  = descriptorpb.FieldDescriptorProto_TYPE_BOOL
		flt = descriptorpb.FieldDescriptorProto_TYPE_FLOAT
		dbl = descriptorpb.FieldDescriptorProto_TYPE_DOUBLE
		msg = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
	)
	oneof := func(f *descriptorpb.FieldDescriptorProto) *descriptorpb.FieldDescriptorProto {
		f.OneofIndex = proto.Int32(0)
		return f
	}
	fd := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("sparkplug_b.proto"),
		Package: proto.String("org.eclipse.tahu.protobuf"),
		Syntax:  proto.String("proto2"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Payload"),
			Field: []*descriptorpb.FieldDescriptorProto{
				field("timestamp", 1, u64, opt, ""),
				field("metrics", 2, msg, rep, ".org.eclipse.tahu.protobuf.Payload.Metric"),
				field("seq", 3, u64, opt, ""),
				field("uuid", 4, str, opt, ""),
				field("body", 5, descriptorpb.FieldDescriptorProto_TYPE_BYTES, opt, ""),
			},
			NestedType: []*descriptorpb.DescriptorProto{{
				Name: proto.String("Metric"),
				Field: []*descriptorpb.FieldDescriptorProto{
					field("name", 1, str, opt, ""),
					field("alias", 2, u64, opt, ""),
					field("timestamp", 3, u64, opt, ""),
					field("datatype", 4, u32, opt, ""),
					field("is_historical", 5, bl, opt, ""),
					field("is_transient", 6, bl, opt, ""),
					field("is_null", 7, bl, opt, ""),
					oneof(field("int_value", 10, u32, opt, "")),
					oneof(field("long_value", 11, u64, opt, "")),
					oneof(field("float_value", 12, flt, opt, "")),
					oneof(field("double_value", 13, dbl, opt, "")),
					oneof(field("boolean_value", 14, bl, opt, "")),
					oneof(field("string_value", 15, str, opt, "")),
				},
				OneofDecl: []*descriptorpb.OneofDescriptorProto{{Name: proto.String("value")}},
			}},
		}},
	}
	f, err := protodesc.NewFile(fd, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f.Messages().ByName("Payload")
}

// Payload is a payload as protobuf decoded it.
type Payload struct {
	Timestamp uint64
	Seq       uint64
	HasSeq    bool
	Metrics   []Metric
}

// Metric is a decoded metric.
type Metric struct {
	Name      string
	Timestamp uint64
	Datatype  uint32
	IsNull    bool
	Value     any // uint32, uint64, float32, float64, bool, string or nil
}

// Metric returns the metric named name, or nil.
func (p *Payload) Metric(name string) *Metric {
	for i := range p.Metrics {
		if p.Metrics[i].Name == name {
			return &p.Metrics[i]
		}
	}
	return nil
}

// Decode decodes b with protobuf's own decoder against PayloadDesc, failing t on an
// error or on fields the descriptor does not know.
func Decode(t testing.TB, b []byte) Payload {
	t.Helper()
	md := PayloadDesc(t)
	m := dynamicpb.NewMessage(md)
	if err := (proto.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(b, m); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	if len(m.GetUnknown()) > 0 {
		t.Fatalf("unknown fields: %x", m.GetUnknown())
	}
	fields := md.Fields()
	d := Payload{
		Timestamp: m.Get(fields.ByName("timestamp")).Uint(),
		Seq:       m.Get(fields.ByName("seq")).Uint(),
		HasSeq:    m.Has(fields.ByName("seq")),
	}
	list := m.Get(fields.ByName("metrics")).List()
	mf := md.Messages().ByName("Metric").Fields()
	for i := range list.Len() {
		mm := list.Get(i).Message()
		dm := Metric{
			Name:      mm.Get(mf.ByName("name")).String(),
			Timestamp: mm.Get(mf.ByName("timestamp")).Uint(),
			Datatype:  uint32(mm.Get(mf.ByName("datatype")).Uint()),
			IsNull:    mm.Get(mf.ByName("is_null")).Bool(),
		}
		if od := mm.WhichOneof(md.Messages().ByName("Metric").Oneofs().ByName("value")); od != nil {
			dm.Value = mm.Get(od).Interface()
		}
		d.Metrics = append(d.Metrics, dm)
	}
	return d
}
