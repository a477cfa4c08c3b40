package publish

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// ResultVersion is the payload version written in the v field. A consumer that meets a
// higher version must not assume it knows every field.
const ResultVersion = 1

// Verdicts a result can carry.
const (
	VerdictOK      = "OK"
	VerdictNG      = "NG"
	VerdictUnknown = "UNKNOWN"
)

// Result is one inspection verdict as published on
// edged/v1/{site}/{line}/{node}/result/{inspection}. The JSON field names are part of
// edged's public surface: dashboards and MES integrations decode them.
type Result struct {
	V int `json:"v"`
	// ID is unique per result; a consumer de-duplicates on it, since QoS 1 delivers at
	// least once and a reconnect can repeat a message.
	ID         string    `json:"id"`
	TraceID    string    `json:"trace_id"`
	Node       string    `json:"node"`
	Inspection string    `json:"inspection"`
	Source     string    `json:"source"`
	Seq        uint64    `json:"seq"`
	CapturedAt time.Time `json:"captured_at"`
	// Verdict is VerdictOK, VerdictNG or VerdictUnknown.
	Verdict string `json:"verdict"`
	Label   string `json:"label"`
	// Score is the probability of the verdict. Scores that are not finite numbers (a
	// broken model) are written as null so that the verdict still reaches the plant.
	Score float64 `json:"score"`
	// Scores maps every label of the model to its probability.
	Scores    map[string]float64 `json:"scores"`
	Model     ModelRef           `json:"model"`
	LatencyMS Latency            `json:"latency_ms"`
	// Truth is the ground-truth label when the source knows it (the simulator does).
	Truth string `json:"truth,omitempty"`
	// PartID names the inspected part when the source knows it (a PLC trigger's part
	// id, an uploaded image's part).
	PartID string `json:"part_id,omitempty"`
	// Reason says why a result is UNKNOWN: ReasonDegraded or ReasonError.
	Reason string `json:"reason,omitempty"`
	// Action is what the line should do with the part of an UNKNOWN result: the
	// inspection's fail-safe (divert, reject, pass).
	Action string `json:"action,omitempty"`
	// Deadline is when the verdict was due (the frame's capture time plus the
	// source's budget), for sinks that act on the line: a reject written after it
	// misses the part. It is not published.
	Deadline time.Time `json:"-"`
	// Image is the frame's image on an NG verdict from an image source, a copy the
	// result owns: the line page shows the latest rejects. It is not published.
	Image *Image `json:"-"`
}

// Image is a frame's image as a source delivered it.
type Image struct {
	// Format is "gray8" (raw 8-bit luminance, Width*Height bytes, row-major), "png",
	// "jpeg" or "bmp".
	Format        string
	Width, Height int
	Data          []byte
}

// Reasons an UNKNOWN result gives.
const (
	// ReasonDegraded: the inference breaker is open; the model was not asked.
	ReasonDegraded = "degraded"
	// ReasonError: preprocessing or the model failed on this frame.
	ReasonError = "error"
)

// ModelRef names the exact model that produced a verdict.
type ModelRef struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	SHA256  string `json:"sha256"`
}

// Latency is where a result's time went, in milliseconds.
type Latency struct {
	// Queue is the time from capture until inference started.
	Queue float64 `json:"queue"`
	Infer float64 `json:"infer"`
	// Total is the time from capture until the verdict was ready.
	Total float64 `json:"total"`
}

// maxSortedScores bounds the label count sorted on the stack; models with more labels
// fall back to a heap-allocated key slice.
const maxSortedScores = 32

// AppendJSON appends r's JSON encoding to dst and returns the extended slice. The bytes
// are exactly what encoding/json would produce for r (fields in declaration order, map
// keys sorted, the same escaping and number format), except that non-finite floats are
// written as null where encoding/json would fail. It exists because results are the
// hottest message edged sends: it allocates nothing when dst has room.
func (r *Result) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, int64(r.V), 10)
	dst = append(dst, `,"id":`...)
	dst = appendString(dst, r.ID)
	dst = append(dst, `,"trace_id":`...)
	dst = appendString(dst, r.TraceID)
	dst = append(dst, `,"node":`...)
	dst = appendString(dst, r.Node)
	dst = append(dst, `,"inspection":`...)
	dst = appendString(dst, r.Inspection)
	dst = append(dst, `,"source":`...)
	dst = appendString(dst, r.Source)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	dst = append(dst, `,"captured_at":"`...)
	dst = r.CapturedAt.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","verdict":`...)
	dst = appendString(dst, r.Verdict)
	dst = append(dst, `,"label":`...)
	dst = appendString(dst, r.Label)
	dst = append(dst, `,"score":`...)
	dst = appendFloat(dst, r.Score)
	dst = append(dst, `,"scores":`...)
	dst = appendScores(dst, r.Scores)
	dst = append(dst, `,"model":{"name":`...)
	dst = appendString(dst, r.Model.Name)
	dst = append(dst, `,"version":`...)
	dst = appendString(dst, r.Model.Version)
	dst = append(dst, `,"sha256":`...)
	dst = appendString(dst, r.Model.SHA256)
	dst = append(dst, `},"latency_ms":{"queue":`...)
	dst = appendFloat(dst, r.LatencyMS.Queue)
	dst = append(dst, `,"infer":`...)
	dst = appendFloat(dst, r.LatencyMS.Infer)
	dst = append(dst, `,"total":`...)
	dst = appendFloat(dst, r.LatencyMS.Total)
	dst = append(dst, '}')
	if r.Truth != "" {
		dst = append(dst, `,"truth":`...)
		dst = appendString(dst, r.Truth)
	}
	if r.PartID != "" {
		dst = append(dst, `,"part_id":`...)
		dst = appendString(dst, r.PartID)
	}
	if r.Reason != "" {
		dst = append(dst, `,"reason":`...)
		dst = appendString(dst, r.Reason)
	}
	if r.Action != "" {
		dst = append(dst, `,"action":`...)
		dst = appendString(dst, r.Action)
	}
	return append(dst, '}')
}

// appendScores writes the map with its keys sorted, as encoding/json does, so that the
// same result always gives the same bytes.
func appendScores(dst []byte, m map[string]float64) []byte {
	if m == nil {
		return append(dst, "null"...)
	}
	var stack [maxSortedScores]string
	var keys []string
	if len(m) <= len(stack) {
		keys = stack[:0]
	} else {
		keys = make([]string, 0, len(m))
	}
	for k := range m {
		keys = append(keys, k)
	}
	// Insertion sort: label counts are small, and a library sort would move the keys
	// to the heap.
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, k)
		dst = append(dst, ':')
		dst = appendFloat(dst, m[k])
	}
	return append(dst, '}')
}

// appendFloat formats f the way encoding/json does: shortest representation, 'f' form
// for ordinary magnitudes and 'e' form with a trimmed exponent for tiny or huge ones.
func appendFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// e-09 becomes e-9, as in encoding/json.
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// AppendJSONString appends s as a JSON string escaped as the result payload is (HTML
// characters and U+2028/9 included, invalid UTF-8 as U+FFFD), for other encoders of
// result fields such as the line page's.
func AppendJSONString(dst []byte, s string) []byte { return appendString(dst, s) }

// AppendJSONFloat appends f as the result payload writes numbers; NaN and Inf, which
// JSON cannot carry, become null.
func AppendJSONFloat(dst []byte, f float64) []byte { return appendFloat(dst, f) }

const hexDigits = "0123456789abcdef"

// jsonSafe marks the ASCII bytes a JSON string can carry as they are: a table lookup per
// byte instead of six comparisons, in the loop that dominates encoding a result.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = b != '"' && b != '\\' && b != '<' && b != '>' && b != '&'
	}
	return t
}()

// appendString writes s as a JSON string with encoding/json's escaping, HTML characters
// included, so that a payload pasted into a web page cannot break out of it.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if jsonSafe[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 end lines in JavaScript; escape them as encoding/json does.
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
