package publish

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Spool records. A message that goes to the spool is stored as one record:
//
//	offset size
//	0      1    version, recordVersion
//	1      1    flags: bits 0-1 QoS, bit 2 retained; the other bits are zero
//	2      2    topic length t, big-endian (MQTT's own limit is 65535)
//	4      t    topic, UTF-8
//	4+t    n    payload: the rest of the record
//
// Four bytes beside the topic and payload: the spool adds its own length, checksum and
// id around it. The version comes first so that a later format can be told apart from
// this one by an older reader, which then refuses the record rather than misreading it.
const (
	recordVersion    = 1
	recordHeaderSize = 4
	flagQoSMask      = 0x03
	flagRetained     = 0x04
	maxTopicLen      = 1<<16 - 1
	// maxMQTTPayload is what fits in one MQTT packet (remaining length 268,435,455)
	// after a fixed header and the longest topic.
	maxMQTTPayload = 268435455 - 2 - maxTopicLen - 2
)

// errRecord is wrapped by every record decoding error.
var errRecord = errors.New("bad spool record")

// appendRecord appends the record for m to dst.
func appendRecord(dst []byte, m *message) []byte {
	flags := m.qos & flagQoSMask
	if m.retained {
		flags |= flagRetained
	}
	dst = append(dst, recordVersion, flags)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(m.topic)))
	dst = append(dst, m.topic...)
	return append(dst, m.payload...)
}

// checkRecordable reports why m cannot be stored as a record; the publisher's own
// topics and payloads always can.
func checkRecordable(m *message) error {
	if len(m.topic) > maxTopicLen {
		return fmt.Errorf("topic of %d bytes is over MQTT's %d", len(m.topic), maxTopicLen)
	}
	return nil
}

// decodeRecord reads a record written by appendRecord. The bytes come from disk, so
// every length is checked before it is used, and the topic is checked to be one the
// broker would accept for a publish. The payload shares data's memory.
func decodeRecord(data []byte) (message, error) {
	if len(data) < recordHeaderSize {
		return message{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", errRecord, len(data), recordHeaderSize)
	}
	if data[0] != recordVersion {
		return message{}, fmt.Errorf("%w: version %d, this edged reads version %d", errRecord, data[0], recordVersion)
	}
	flags := data[1]
	if flags&^(flagQoSMask|flagRetained) != 0 {
		return message{}, fmt.Errorf("%w: unknown flags %#02x", errRecord, flags)
	}
	qos := flags & flagQoSMask
	if qos > 2 {
		return message{}, fmt.Errorf("%w: qos %d", errRecord, qos)
	}
	n := int(binary.BigEndian.Uint16(data[2:4]))
	rest := data[recordHeaderSize:]
	if n > len(rest) {
		return message{}, fmt.Errorf("%w: topic length %d, only %d bytes follow", errRecord, n, len(rest))
	}
	topic := string(rest[:n])
	if err := checkPublishTopic(topic); err != nil {
		return message{}, fmt.Errorf("%w: topic %q %w", errRecord, topic, err)
	}
	payload := rest[n:]
	if len(payload) > maxMQTTPayload {
		return message{}, fmt.Errorf("%w: payload of %d bytes does not fit in an MQTT packet", errRecord, len(payload))
	}
	return message{topic: topic, payload: payload, qos: qos, retained: flags&flagRetained != 0}, nil
}

// checkPublishTopic rejects topics a broker refuses for a publish: empty, not UTF-8,
// with NUL or a wildcard.
func checkPublishTopic(topic string) error {
	switch {
	case topic == "":
		return errors.New("is empty")
	case !utf8.ValidString(topic):
		return errors.New("is not UTF-8")
	case strings.ContainsAny(topic, "+#\x00"):
		return errors.New("has a wildcard or NUL")
	}
	return nil
}
