package publish

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgedrun/edged/sparkplug"
)

// Payload formats of Config.Format.
const (
	FormatJSON       = "json"
	FormatSparkplugB = "sparkplug_b"
)

// SparkplugConfig names the edge node in Sparkplug B topics:
// spBv1.0/{GroupID}/NBIRTH|NDATA|NDEATH/{EdgeNodeID}.
type SparkplugConfig struct {
	// GroupID defaults to the site.
	GroupID string `yaml:"group_id"`
	// EdgeNodeID defaults to "{line}-{node}": node names repeat across lines.
	EdgeNodeID string `yaml:"edge_node_id"`
	// Inspections are declared in every NBIRTH, so that a host knows their metrics
	// before the first NDATA. An inspection or score label first seen in a result is
	// declared by a new NBIRTH sent just before that result's NDATA.
	Inspections []string `yaml:"-"`
}

// Sparkplug metric names under "<inspection>/".
const (
	spbVerdict  = "verdict"
	spbLabel    = "label"
	spbScore    = "score"
	spbScores   = "scores/"
	spbSeq      = "seq"
	spbLatency  = "latency_ms/total"
	spbModel    = "model/version"
	spbID       = "id"
	spbReason   = "reason"
	spbAction   = "action"
	spbPartID   = "part_id"
	spbMaxBdSeq = 256 // bdSeq runs 0..255 and wraps, as seq does
	spbMaxSeq   = 256
)

// spbMetric is a metric a birth declares.
type spbMetric struct {
	name string
	typ  sparkplug.DataType
}

// spbNode is the Sparkplug B edge node's state that outlives a connection: the topics
// and the metrics declared so far (which every birth declares again).
type spbNode struct {
	birthTopic  string
	dataTopic   string
	deathTopic  string
	resultTopic string // the JSON result topic prefix, which spool records carry

	mu          sync.Mutex
	inspections map[string]map[string]bool // inspection -> score labels declared
}

func newSpbNode(cfg Config, resultTopic string) *spbNode {
	group, edge := cfg.Sparkplug.GroupID, cfg.Sparkplug.EdgeNodeID
	n := &spbNode{
		birthTopic:  sparkplug.Topic(group, sparkplug.NBIRTH, edge),
		dataTopic:   sparkplug.Topic(group, sparkplug.NDATA, edge),
		deathTopic:  sparkplug.Topic(group, sparkplug.NDEATH, edge),
		resultTopic: resultTopic,
		inspections: map[string]map[string]bool{},
	}
	for _, in := range cfg.Sparkplug.Inspections {
		n.inspections[in] = map[string]bool{}
	}
	return n
}

// death is the NDEATH of the connection with bdSeq.
func (n *spbNode) death(bdSeq uint64) []byte { return sparkplug.Death(bdSeq, time.Now()) }

// learn records r's inspection and score labels and reports whether any was new.
func (n *spbNode) learn(r *Result) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	labels, ok := n.inspections[r.Inspection]
	if !ok {
		labels = map[string]bool{}
		n.inspections[r.Inspection] = labels
	}
	fresh := !ok
	for l := range r.Scores {
		if !labels[l] {
			labels[l] = true
			fresh = true
		}
	}
	return fresh
}

// birth is an NBIRTH payload: seq 0, bdSeq, the rebirth control and every metric
// declared so far, null-valued.
func (n *spbNode) birth(bdSeq uint64, now time.Time) []byte {
	ts := sparkplug.Millis(now)
	metrics := []sparkplug.Metric{
		{Name: sparkplug.BdSeqMetric, Timestamp: ts, Type: sparkplug.Int64, Int: int64(bdSeq)},
		{Name: sparkplug.RebirthMetric, Timestamp: ts, Type: sparkplug.Boolean},
	}
	n.mu.Lock()
	for _, in := range slices.Sorted(maps.Keys(n.inspections)) {
		for _, m := range spbResultMetrics(in, slices.Sorted(maps.Keys(n.inspections[in]))) {
			metrics = append(metrics, sparkplug.Metric{Name: m.name, Timestamp: ts, Type: m.typ, Null: true})
		}
	}
	n.mu.Unlock()
	p := sparkplug.Payload{Timestamp: ts, Metrics: metrics, HasSeq: true}
	return p.Marshal()
}

// spbResultMetrics are the metrics an inspection's results carry.
func spbResultMetrics(inspection string, labels []string) []spbMetric {
	pre := inspection + "/"
	ms := []spbMetric{
		{pre + spbID, sparkplug.String},
		{pre + spbVerdict, sparkplug.String},
		{pre + spbLabel, sparkplug.String},
		{pre + spbScore, sparkplug.Double},
	}
	for _, l := range labels {
		ms = append(ms, spbMetric{pre + spbScores + l, sparkplug.Double})
	}
	return append(ms,
		spbMetric{pre + spbSeq, sparkplug.UInt64},
		spbMetric{pre + spbLatency, sparkplug.Double},
		spbMetric{pre + spbModel, sparkplug.String},
		spbMetric{pre + spbReason, sparkplug.String},
		spbMetric{pre + spbAction, sparkplug.String},
		spbMetric{pre + spbPartID, sparkplug.String},
	)
}

// data is the NDATA payload of r with seq.
func spbData(r *Result, seq uint64) []byte {
	ts := sparkplug.Millis(r.CapturedAt)
	pre := r.Inspection + "/"
	str := func(name, v string) sparkplug.Metric {
		return sparkplug.Metric{Name: pre + name, Timestamp: ts, Type: sparkplug.String, Str: v}
	}
	dbl := func(name string, v float64) sparkplug.Metric {
		return sparkplug.Metric{Name: pre + name, Timestamp: ts, Type: sparkplug.Double, Float64: v}
	}
	metrics := make([]sparkplug.Metric, 0, 11+len(r.Scores))
	metrics = append(metrics,
		str(spbID, r.ID),
		str(spbVerdict, r.Verdict),
		str(spbLabel, r.Label),
		dbl(spbScore, r.Score),
	)
	for _, l := range slices.Sorted(maps.Keys(r.Scores)) {
		metrics = append(metrics, dbl(spbScores+l, r.Scores[l]))
	}
	metrics = append(metrics,
		sparkplug.Metric{Name: pre + spbSeq, Timestamp: ts, Type: sparkplug.UInt64, Uint: r.Seq},
		dbl(spbLatency, r.LatencyMS.Total),
		str(spbModel, r.Model.Version),
		// Empty unless the verdict is UNKNOWN; sent every time so that a tag showing a
		// fail-safe action clears with the next judged part.
		str(spbReason, r.Reason),
		str(spbAction, r.Action),
		str(spbPartID, r.PartID),
	)
	p := sparkplug.Payload{Timestamp: ts, Metrics: metrics, Seq: seq, HasSeq: true}
	return p.Marshal()
}

// spbConn encodes the messages of one connection, on its sender's goroutine: results
// become NDATA with the connection's next seq, the birth an NBIRTH that restarts it.
type spbConn struct {
	node   *spbNode
	bdSeq  uint64
	seq    uint64
	born   bool
	client mqtt.Client
}

// encode returns what goes out for m: the birth as NBIRTH, a result (queued, or a spool
// record holding its JSON) as NDATA, preceded by an NBIRTH when the result has a metric
// no birth declared yet or no birth went out on this connection; anything else (events)
// unchanged.
func (c *spbConn) encode(m message) message {
	if m.status {
		c.born, c.seq = true, 1
		m.topic, m.payload, m.qos, m.retained = c.node.birthTopic, c.node.birth(c.bdSeq, time.Now()), 0, false
		return m
	}
	r := m.res
	if r == nil {
		if !strings.HasPrefix(m.topic, c.node.resultTopic) {
			return m
		}
		r = new(Result)
		if err := json.Unmarshal(m.payload, r); err != nil {
			return m // not a result after all: it goes out as it is
		}
	}
	if c.node.learn(r) || !c.born {
		// A rebirth: at QoS 0, as births are, so it needs no place in the window.
		c.born, c.seq = true, 1
		c.client.Publish(c.node.birthTopic, 0, false, c.node.birth(c.bdSeq, time.Now()))
	}
	m.topic, m.payload, m.retained = c.node.dataTopic, spbData(r, c.seq), false
	c.seq = (c.seq + 1) % spbMaxSeq
	return m
}
