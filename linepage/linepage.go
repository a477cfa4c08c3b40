// Package linepage provides the line page: a read-only web page served by edged on its
// admin server that shows the technician at the line, without any cloud, what the camera
// saw and what the model said. It is a pipeline sink that keeps the last results and NG
// images and streams every verdict to the page over server-sent events; a browser that
// cannot keep up is dropped instead of slowing the line, and reconnects by itself.
package linepage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/pipeline"
	"github.com/edgedrun/edged/publish"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxNGImages    = 12
	DefaultClientBuffer   = 256
	DefaultStatusInterval = time.Second
	// maxResults is how many results the snapshot carries and the page lists: what fits
	// on a panel PC, and bounded so the snapshot stays small.
	maxResults = 50
	// pingInterval keeps proxies and NAT tables from closing a stream that carries no
	// results (a stopped line).
	pingInterval = 15 * time.Second
)

// Config wires the page.
type Config struct {
	// Status returns the /v1/status document, sent to the page as status events.
	Status func() any
	// Title names the box, "site/line/node".
	Title string
	// MaxNGImages is how many NG images are kept, newest first (0 = 12).
	MaxNGImages int
	// ClientBuffer is how many events are buffered per client before that client is
	// dropped (0 = 256).
	ClientBuffer int
	// StatusInterval is the period of status events (0 = 1s).
	StatusInterval time.Duration
	Registerer     prometheus.Registerer
	Log            *slog.Logger
}

// Page is the line page. Its lifecycle: New, mount Routes on the admin server, put it
// in the chain of pipeline sinks, Run until the process ends.
type Page struct {
	cfg   Config
	log   *slog.Logger
	index []byte // index.html with the title filled in
	ping  time.Duration

	clients prometheus.Gauge
	dropped prometheus.Counter

	nextMu sync.RWMutex
	next   pipeline.Sink

	// mu guards everything below. Publish holds it only to record a result and offer
	// it to the clients without blocking; nothing holds it across network writes.
	mu       sync.Mutex
	counts   map[string]*[3]uint64
	results  [maxResults][]byte // JSON of the result events, a ring
	nResults int                // results recorded since start
	images   []*keptImage       // ring of MaxNGImages
	nImages  int                // images kept since start
	subs     map[*client]struct{}
	running  bool
	stopped  bool
}

// Interface guard: the page sits in the chain of pipeline sinks.
var _ pipeline.Sink = (*Page)(nil)

// client is one open event stream. ch carries whole SSE frames, shared by every client:
// an event is encoded once however many pages watch.
type client struct {
	ch     chan []byte
	cancel context.CancelFunc
}

// Verdict slots in the per-inspection counters.
const (
	slotOK = iota
	slotNG
	slotUnknown
)

// New builds the page; it does nothing until Run and its routes are mounted.
func New(cfg Config, next pipeline.Sink) (*Page, error) {
	if cfg.MaxNGImages < 0 {
		return nil, fmt.Errorf("linepage: max NG images %d is negative", cfg.MaxNGImages)
	}
	if cfg.ClientBuffer < 0 {
		return nil, fmt.Errorf("linepage: client buffer %d is negative", cfg.ClientBuffer)
	}
	if cfg.StatusInterval < 0 {
		return nil, fmt.Errorf("linepage: status interval %s is negative", cfg.StatusInterval)
	}
	if cfg.MaxNGImages == 0 {
		cfg.MaxNGImages = DefaultMaxNGImages
	}
	if cfg.ClientBuffer == 0 {
		cfg.ClientBuffer = DefaultClientBuffer
	}
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = DefaultStatusInterval
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	index, err := renderIndex(cfg.Title)
	if err != nil {
		return nil, err
	}
	p := &Page{
		cfg:   cfg,
		log:   cfg.Log,
		index: index,
		ping:  pingInterval,
		next:  next,
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edged_linepage_clients",
			Help: "Browsers watching the line page's event stream.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edged_linepage_clients_dropped_total",
			Help: "Line page clients dropped because they did not keep up with the results; their browsers reconnect.",
		}),
		counts: make(map[string]*[3]uint64),
		images: make([]*keptImage, cfg.MaxNGImages),
		subs:   make(map[*client]struct{}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{p.clients, p.dropped} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register line page metrics: %w", err)
			}
		}
	}
	return p, nil
}

// SetNext sets the sink results go to after the page has seen them.
func (p *Page) SetNext(next pipeline.Sink) {
	p.nextMu.Lock()
	p.next = next
	p.nextMu.Unlock()
}

// Publish records r for the page, offers it to every watching browser without waiting
// for any, and hands it to the next sink.
func (p *Page) Publish(ctx context.Context, r *publish.Result) error {
	p.record(r)
	p.nextMu.RLock()
	next := p.next
	p.nextMu.RUnlock()
	if next == nil {
		return nil
	}
	return next.Publish(ctx, r)
}

const resultPrefix = "event: result\ndata: "

func (p *Page) record(r *publish.Result) {
	img := r.Image
	if img != nil && (r.Verdict != publish.VerdictNG || checkImage(img) != nil) {
		if r.Verdict == publish.VerdictNG {
			p.log.Debug("NG image not kept", "trace_id", r.TraceID, "inspection", r.Inspection, "err", checkImage(img))
		}
		img = nil
	}
	// The frame is allocated once and shared: the clients' channels and the ring of
	// last results all hold the same bytes, which nobody writes after this.
	frame := make([]byte, 0, 320+len(r.ID)+len(r.Label)+len(r.PartID))
	frame = append(frame, resultPrefix...)

	p.mu.Lock()
	defer p.mu.Unlock()
	id := ""
	if img != nil {
		id = p.imageID(r.ID)
	}
	frame = appendResult(frame, r, id)
	frame = append(frame, "\n\n"...)
	c := p.counts[r.Inspection]
	if c == nil {
		c = new([3]uint64)
		p.counts[r.Inspection] = c
	}
	c[verdictSlot(r.Verdict)]++
	p.results[p.nResults%maxResults] = frame[len(resultPrefix) : len(frame)-2]
	p.nResults++
	if img != nil {
		p.images[p.nImages%len(p.images)] = &keptImage{
			meta: imageMeta{
				ID: id, URL: "/v1/line/images/" + id, Inspection: r.Inspection, Source: r.Source,
				Seq: r.Seq, Label: r.Label, Score: finite(r.Score), CapturedAt: r.CapturedAt,
				Format: img.Format, Width: img.Width, Height: img.Height,
			},
			img: img,
		}
		p.nImages++
	}
	p.broadcastLocked(frame)
}

// broadcastLocked offers frame to every client; a client whose buffer is full is too
// slow for the line and is dropped, so that no browser ever holds up a verdict.
func (p *Page) broadcastLocked(frame []byte) {
	for c := range p.subs {
		select {
		case c.ch <- frame:
		default:
			p.removeLocked(c)
			p.dropped.Inc()
			p.log.Info("line page client dropped: it did not keep up", "buffer", cap(c.ch))
		}
	}
}

func (p *Page) removeLocked(c *client) {
	if _, ok := p.subs[c]; !ok {
		return
	}
	delete(p.subs, c)
	p.clients.Dec()
	c.cancel()
}

func verdictSlot(v string) int {
	switch v {
	case publish.VerdictOK:
		return slotOK
	case publish.VerdictNG:
		return slotNG
	}
	return slotUnknown
}

// Run sends the status events until ctx ends, then closes every client stream and
// returns nil.
func (p *Page) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.running || p.stopped {
		p.mu.Unlock()
		return errors.New("linepage: run called twice")
	}
	p.running = true
	p.mu.Unlock()

	t := time.NewTicker(p.cfg.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.mu.Lock()
			p.stopped = true
			for c := range p.subs {
				p.removeLocked(c)
			}
			p.mu.Unlock()
			return nil
		case <-t.C:
			if p.cfg.Status == nil {
				continue
			}
			frame, err := statusFrame(p.cfg.Status())
			if err != nil {
				p.log.Warn("line page status not sent", "err", err)
				continue
			}
			p.mu.Lock()
			p.broadcastLocked(frame)
			p.mu.Unlock()
		}
	}
}

func statusFrame(doc any) ([]byte, error) {
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode status document: %w", err)
	}
	frame := make([]byte, 0, len(b)+24)
	frame = append(frame, "event: status\ndata: "...)
	frame = append(frame, b...)
	return append(frame, "\n\n"...), nil
}

// subscribe registers a client and takes the snapshot in the same critical section,
// so that the snapshot and the events after it neither miss nor repeat a result.
func (p *Page) subscribe(cancel context.CancelFunc) (*client, []byte, error) {
	c := &client{ch: make(chan []byte, p.cfg.ClientBuffer), cancel: cancel}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return nil, nil, errors.New("the line page has stopped")
	}
	s := p.snapshotLocked()
	p.subs[c] = struct{}{}
	p.clients.Inc()
	p.mu.Unlock()
	b, err := json.Marshal(s)
	if err != nil {
		p.unsubscribe(c)
		return nil, nil, fmt.Errorf("encode snapshot: %w", err)
	}
	return c, b, nil
}

func (p *Page) unsubscribe(c *client) {
	p.mu.Lock()
	p.removeLocked(c)
	p.mu.Unlock()
}

// snapshot is what a page renders from when it (re)connects.
type snapshot struct {
	Title     string                       `json:"title"`
	Counters  map[string]map[string]uint64 `json:"counters"`
	Results   []json.RawMessage            `json:"results"`
	Images    []imageMeta                  `json:"images"`
	MaxImages int                          `json:"max_images"`
}

// snapshotLocked copies what the snapshot needs; the result bytes are never written
// after they are recorded, so they are shared, not copied.
func (p *Page) snapshotLocked() snapshot {
	s := snapshot{
		Title:     p.cfg.Title,
		Counters:  make(map[string]map[string]uint64, len(p.counts)),
		Results:   make([]json.RawMessage, 0, min(p.nResults, maxResults)),
		Images:    make([]imageMeta, 0, min(p.nImages, len(p.images))),
		MaxImages: len(p.images),
	}
	for name, c := range p.counts {
		s.Counters[name] = map[string]uint64{
			publish.VerdictOK: c[slotOK], publish.VerdictNG: c[slotNG], publish.VerdictUnknown: c[slotUnknown],
		}
	}
	for i := 1; i <= min(p.nResults, maxResults); i++ {
		s.Results = append(s.Results, p.results[(p.nResults-i)%maxResults])
	}
	for i := 1; i <= min(p.nImages, len(p.images)); i++ {
		s.Images = append(s.Images, p.images[(p.nImages-i)%len(p.images)].meta)
	}
	return s
}

// appendResult writes the result event the page reads: the fields a technician looks
// at, not the whole published payload.
func appendResult(dst []byte, r *publish.Result, imageID string) []byte {
	dst = append(dst, `{"id":`...)
	dst = publish.AppendJSONString(dst, r.ID)
	dst = append(dst, `,"inspection":`...)
	dst = publish.AppendJSONString(dst, r.Inspection)
	dst = append(dst, `,"source":`...)
	dst = publish.AppendJSONString(dst, r.Source)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	dst = append(dst, `,"verdict":`...)
	dst = publish.AppendJSONString(dst, r.Verdict)
	dst = append(dst, `,"label":`...)
	dst = publish.AppendJSONString(dst, r.Label)
	dst = append(dst, `,"score":`...)
	dst = publish.AppendJSONFloat(dst, r.Score)
	dst = append(dst, `,"captured_at":"`...)
	dst = r.CapturedAt.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","model":{"name":`...)
	dst = publish.AppendJSONString(dst, r.Model.Name)
	dst = append(dst, `,"version":`...)
	dst = publish.AppendJSONString(dst, r.Model.Version)
	dst = append(dst, `},"latency_ms":`...)
	dst = publish.AppendJSONFloat(dst, r.LatencyMS.Total)
	dst = append(dst, `,"part_id":`...)
	dst = publish.AppendJSONString(dst, r.PartID)
	dst = append(dst, `,"image":`...)
	dst = publish.AppendJSONString(dst, imageID)
	return append(dst, '}')
}
