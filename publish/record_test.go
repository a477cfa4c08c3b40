package publish

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, m := range []message{
		{topic: "edged/v1/s1/l1/n1/result/el", payload: []byte(`{"v":1}`), qos: 1},
		{topic: "edged/v1/s1/l1/n1/event", payload: nil, qos: 0},
		{topic: "t", payload: []byte{0, 0xff, 0xED}, qos: 2, retained: true},
		{topic: strings.Repeat("é", maxTopicLen/2), payload: bytes.Repeat([]byte("x"), 1<<16), qos: 1},
	} {
		rec := appendRecord([]byte("junk before"), &m)[len("junk before"):]
		if want := recordHeaderSize + len(m.topic) + len(m.payload); len(rec) != want {
			t.Errorf("record of %q is %d bytes, want %d", m.topic[:min(len(m.topic), 20)], len(rec), want)
		}
		got, err := decodeRecord(rec)
		if err != nil {
			t.Fatalf("decode %q: %v", m.topic[:min(len(m.topic), 20)], err)
		}
		if got.topic != m.topic || !bytes.Equal(got.payload, m.payload) || got.qos != m.qos || got.retained != m.retained {
			t.Errorf("round trip of %+v gave %+v", m, got)
		}
	}
}

// The exact bytes are part of the on-disk format: a spool written by this version must
// be read by the next one.
func TestRecordBytes(t *testing.T) {
	m := message{topic: "a/b", payload: []byte("{}"), qos: 1, retained: true}
	want := []byte{1, 0x05, 0, 3, 'a', '/', 'b', '{', '}'}
	if got := appendRecord(nil, &m); !bytes.Equal(got, want) {
		t.Fatalf("record % x, want % x", got, want)
	}
}

func TestDecodeRecordRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "0 bytes, shorter than the 4-byte header"},
		{"short header", []byte{1, 1, 0}, "3 bytes"},
		{"version 0", []byte{0, 1, 0, 1, 't'}, "version 0, this edged reads version 1"},
		{"version 2", []byte{2, 1, 0, 1, 't'}, "version 2"},
		{"unknown flag", []byte{1, 0x09, 0, 1, 't'}, "unknown flags 0x09"},
		{"qos 3", []byte{1, 0x03, 0, 1, 't'}, "qos 3"},
		{"topic overruns", []byte{1, 1, 0, 9, 't', 'o'}, "topic length 9, only 2 bytes follow"},
		{"topic length huge", []byte{1, 1, 0xff, 0xff}, "topic length 65535, only 0 bytes follow"},
		{"empty topic", []byte{1, 1, 0, 0, '{', '}'}, "is empty"},
		{"wildcard", []byte{1, 1, 0, 3, 'a', '/', '#'}, "wildcard"},
		{"plus", []byte{1, 1, 0, 1, '+'}, "wildcard"},
		{"nul", []byte{1, 1, 0, 2, 'a', 0}, "NUL"},
		{"not utf-8", []byte{1, 1, 0, 2, 0xc3, 0x28}, "not UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeRecord(tc.data)
			if err == nil || !errors.Is(err, errRecord) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("decodeRecord(% x) = %v, want an errRecord containing %q", tc.data, err, tc.want)
			}
		})
	}
}

// FuzzDecodeRecord: any bytes from disk decode to an error or to a message that encodes
// back to the same bytes; nothing panics or reads past the end.
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte{1, 0x05, 0, 3, 'a', '/', 'b', '{', '}'})
	f.Add([]byte{1, 1, 0, 0})
	f.Add([]byte{1, 1, 0xff, 0xff, 'x'})
	f.Add(appendRecord(nil, &message{topic: "edged/v1/s/l/n/result/x", payload: []byte(`{"id":"1"}`), qos: 1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeRecord(data)
		if err != nil {
			return
		}
		if m.qos > 2 || checkPublishTopic(m.topic) != nil {
			t.Fatalf("decoded an invalid message %+v", m)
		}
		if again := appendRecord(nil, &m); !bytes.Equal(again, data) {
			t.Fatalf("re-encoding % x gave % x", data, again)
		}
	})
}
