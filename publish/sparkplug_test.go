package publish

import (
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgedrun/edged/internal/testmqtt"
	"github.com/edgedrun/edged/sparkplug"
	"github.com/edgedrun/edged/sparkplug/spbtest"
	"github.com/edgedrun/edged/spool"
)

// spbSub subscribes to spBv1.0/# at QoS 0, so that the broker passes births (QoS 0)
// and data (QoS 1) on in the order they came, and checks the seq rules as messages
// arrive: an NBIRTH has seq 0, every NDATA the one after the message before it, mod
// 256.
type spbSub struct {
	client mqtt.Client
	msgs   chan mqtt.Message
	next   int // the seq the next NDATA must carry; -1 before any NBIRTH
}

type spbMsg struct {
	kind string
	p    spbtest.Payload
}

func subscribeSpb(t *testing.T, broker string) *spbSub {
	t.Helper()
	s := &spbSub{msgs: make(chan mqtt.Message, 1<<16), next: -1}
	s.client = mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID(uniqueID("spbsub")).
		SetProtocolVersion(4).SetAutoReconnect(false).SetOrderMatters(true))
	if tok := s.client.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	t.Cleanup(func() { s.client.Disconnect(100) })
	tok := s.client.Subscribe(sparkplug.Namespace+"/#", 0, func(_ mqtt.Client, m mqtt.Message) { s.msgs <- m })
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return s
}

// get returns the next message, checked against the topic scheme and the seq rules.
func (s *spbSub) get(t *testing.T) spbMsg {
	t.Helper()
	var m mqtt.Message
	select {
	case m = <-s.msgs:
	case <-time.After(waitTimeout):
		t.Fatal("timed out waiting for a Sparkplug message")
	}
	parts := strings.Split(m.Topic(), "/")
	if len(parts) != 4 || parts[0] != "spBv1.0" || parts[1] != "s1" || parts[3] != "l1-n1" {
		t.Fatalf("topic %q", m.Topic())
	}
	if m.Retained() {
		t.Fatalf("%s retained", m.Topic())
	}
	msg := spbMsg{kind: parts[2], p: spbtest.Decode(t, m.Payload())}
	switch msg.kind {
	case sparkplug.NBIRTH:
		if !msg.p.HasSeq || msg.p.Seq != 0 {
			t.Fatalf("NBIRTH seq %d (has %v), want 0", msg.p.Seq, msg.p.HasSeq)
		}
		s.next = 1
	case sparkplug.NDATA:
		if s.next < 0 {
			t.Fatal("NDATA before any NBIRTH")
		}
		if !msg.p.HasSeq || msg.p.Seq != uint64(s.next) {
			t.Fatalf("NDATA seq %d, want %d", msg.p.Seq, s.next)
		}
		s.next = (s.next + 1) % 256
	case sparkplug.NDEATH:
		if msg.p.HasSeq || len(msg.p.Metrics) != 1 {
			t.Fatalf("NDEATH: %+v", msg.p)
		}
	default:
		t.Fatalf("message type %q", msg.kind)
	}
	return msg
}

func bdSeqOf(t *testing.T, m spbMsg) uint64 {
	t.Helper()
	bd := m.p.Metric(sparkplug.BdSeqMetric)
	if bd == nil || bd.Datatype != uint32(sparkplug.Int64) {
		t.Fatalf("%s without an Int64 bdSeq: %+v", m.kind, m.p)
	}
	return bd.Value.(uint64)
}

// expectData reads messages until the NDATA of every result in want came, in order,
// checking each one's metrics, and allowing births in between. It returns the births.
func (s *spbSub) expectData(t *testing.T, want []*Result) []spbMsg {
	t.Helper()
	var births []spbMsg
	for i := 0; i < len(want); {
		m := s.get(t)
		switch m.kind {
		case sparkplug.NBIRTH:
			births = append(births, m)
			continue
		case sparkplug.NDEATH:
			t.Fatalf("NDEATH while waiting for result %d", i)
		}
		checkNDATA(t, m.p, want[i])
		i++
	}
	return births
}

func checkNDATA(t *testing.T, p spbtest.Payload, r *Result) {
	t.Helper()
	ts := uint64(r.CapturedAt.UnixMilli())
	if p.Timestamp != ts {
		t.Errorf("NDATA timestamp %d, want captured_at %d", p.Timestamp, ts)
	}
	pre := r.Inspection + "/"
	want := map[string]struct {
		typ sparkplug.DataType
		v   any
	}{
		pre + "id":               {sparkplug.String, r.ID},
		pre + "verdict":          {sparkplug.String, r.Verdict},
		pre + "label":            {sparkplug.String, r.Label},
		pre + "score":            {sparkplug.Double, r.Score},
		pre + "seq":              {sparkplug.UInt64, r.Seq},
		pre + "latency_ms/total": {sparkplug.Double, r.LatencyMS.Total},
		pre + "model/version":    {sparkplug.String, r.Model.Version},
		pre + "reason":           {sparkplug.String, r.Reason},
		pre + "action":           {sparkplug.String, r.Action},
		pre + "part_id":          {sparkplug.String, r.PartID},
	}
	for l, v := range r.Scores {
		want[pre+"scores/"+l] = struct {
			typ sparkplug.DataType
			v   any
		}{sparkplug.Double, v}
	}
	if len(p.Metrics) != len(want) {
		t.Errorf("NDATA of %s: %d metrics, want %d", r.ID, len(p.Metrics), len(want))
	}
	for name, w := range want {
		m := p.Metric(name)
		if m == nil {
			t.Errorf("NDATA of %s: no metric %q", r.ID, name)
			continue
		}
		if m.Datatype != uint32(w.typ) || m.Value != w.v || m.Timestamp != ts || m.IsNull {
			t.Errorf("NDATA of %s: metric %+v, want type %d value %v", r.ID, *m, w.typ, w.v)
		}
	}
}

// TestSparkplugB runs a Sparkplug B edge node against mosquitto through its life: the
// birth, data with consecutive seqs past the wrap at 256, the will when the connection
// dies, a new birth with the next bdSeq, results spooled while the broker is away and
// replayed as NDATA with fresh seqs after its restart, and the NDEATH at shutdown.
func TestSparkplugB(t *testing.T) {
	srv := testmqtt.StartServer(t, testmqtt.Options{})
	g := startProxy(t, srv.Addr())
	sub := subscribeSpb(t, srv.URL())

	sp, _ := openSpool(t, spool.Options{})
	cfg := testConfig(g.url())
	cfg.Spool = sp
	cfg.Format = FormatSparkplugB
	cfg.Sparkplug.Inspections = inspections
	cfg.MaxReconnectInterval = 100 * time.Millisecond
	p := startPublisher(t, cfg)
	p.waitConnected(t)

	// The birth: seq 0, bdSeq 0, every configured inspection's metrics declared.
	birth := sub.get(t)
	if birth.kind != sparkplug.NBIRTH || bdSeqOf(t, birth) != 0 {
		t.Fatalf("first message %s bdSeq %v, want NBIRTH bdSeq 0", birth.kind, birth.p.Metric("bdSeq"))
	}
	for _, in := range inspections {
		m := birth.p.Metric(in + "/verdict")
		if m == nil || !m.IsNull || m.Datatype != uint32(sparkplug.String) {
			t.Fatalf("NBIRTH declares %s/verdict as %+v", in, m)
		}
	}
	if m := birth.p.Metric(sparkplug.RebirthMetric); m == nil || m.Value != false {
		t.Fatalf("NBIRTH rebirth control: %+v", m)
	}

	// 300 results: seqs wrap. The score labels are new to the node, so a rebirth
	// declaring them comes before the first NDATA of each inspection.
	results := makeResults(300)
	publishAll(t, p, results)
	births := sub.expectData(t, results)
	if len(births) != len(inspections) {
		t.Fatalf("%d births among the data, want %d", len(births), len(inspections))
	}
	for _, b := range births {
		if bdSeqOf(t, b) != 0 {
			t.Fatalf("rebirth bdSeq %d, want 0", bdSeqOf(t, b))
		}
	}
	for _, in := range inspections {
		if births[len(births)-1].p.Metric(in+"/scores/ng") == nil {
			t.Fatalf("the last rebirth does not declare %s/scores/ng", in)
		}
	}

	// The connection dies: the broker publishes the will, NDEATH with bdSeq 0, and
	// the publisher comes back with bdSeq 1.
	g.sever()
	var death, rebirth *spbMsg
	for death == nil || rebirth == nil {
		m := sub.get(t)
		switch m.kind {
		case sparkplug.NDEATH:
			death = &m
		case sparkplug.NBIRTH:
			rebirth = &m
		default:
			t.Fatalf("%s while waiting for NDEATH and NBIRTH", m.kind)
		}
	}
	if bd := bdSeqOf(t, *death); bd != 0 {
		t.Fatalf("NDEATH (will) bdSeq %d, want 0", bd)
	}
	if bd := bdSeqOf(t, *rebirth); bd != 1 {
		t.Fatalf("NBIRTH after reconnect bdSeq %d, want 1", bd)
	}
	more := makeResults(10)
	publishAll(t, p, more)
	if births := sub.expectData(t, more); len(births) != 0 {
		t.Fatalf("unexpected births: %d", len(births))
	}

	// The broker restarts; results published meanwhile wait in the spool and go out
	// as NDATA after the new birth, with seqs from 1.
	g.setDown(true)
	srv.Stop()
	waitFor(t, "the publisher to notice", func() bool { return !p.Connected() })
	spooled := makeResults(20)
	publishAll(t, p, spooled)
	waitFor(t, "results in the spool", func() bool { return sp.Len() == len(spooled) })
	srv.Start()
	sub = subscribeSpb(t, srv.URL())
	g.setDown(false)
	p.waitConnected(t)
	b := sub.get(t)
	if b.kind != sparkplug.NBIRTH || bdSeqOf(t, b) != 2 {
		t.Fatalf("after the restart: %s bdSeq %v, want NBIRTH bdSeq 2", b.kind, b.p.Metric("bdSeq"))
	}
	if births := sub.expectData(t, spooled); len(births) != 0 {
		t.Fatalf("unexpected births: %d", len(births))
	}
	waitFor(t, "the spooled results acknowledged", func() bool {
		return p.Stats().Replayed == uint64(len(spooled)) && sp.Len() == 0
	})

	// Clean shutdown: NDEATH with the connection's bdSeq.
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	d := sub.get(t)
	if d.kind != sparkplug.NDEATH || bdSeqOf(t, d) != 2 {
		t.Fatalf("at shutdown: %s, want NDEATH bdSeq 2", d.kind)
	}
}

// TestSparkplugBConfig checks the format's validation and defaults.
func TestSparkplugBConfig(t *testing.T) {
	cfg := testConfig("tcp://127.0.0.1:1883")
	cfg.Format = FormatSparkplugB
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "mqtt.format") {
		t.Fatalf("sparkplug_b without a spool: %v", err)
	}
	sp, _ := openSpool(t, spool.Options{})
	cfg.Spool = sp
	cfg.Sparkplug.GroupID = "a/b"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `mqtt.sparkplug.group_id: "a/b"`) {
		t.Fatalf("bad group id: %v", err)
	}
	cfg.Sparkplug.GroupID = ""
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d := cfg.withDefaults()
	if d.Sparkplug.GroupID != "s1" || d.Sparkplug.EdgeNodeID != "l1-n1" {
		t.Fatalf("defaults: %+v", d.Sparkplug)
	}
	cfg.Format = "protobuf"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `mqtt.format: "protobuf"`) {
		t.Fatalf("unknown format: %v", err)
	}
}
