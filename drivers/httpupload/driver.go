package httpupload

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/imagedir/sniff"
)

// Driver takes uploaded images. It is safe for concurrent use by any number of
// requests.
type Driver struct {
	spec drivers.Spec
	cfg  Config
	seq  atomic.Uint64
	sem  chan struct{}

	mu       sync.Mutex
	run      *running // nil outside Run
	inflight sync.WaitGroup
}

// running is what handlers need from the active Run.
type running struct {
	ctx context.Context
	e   drivers.Emitter
	log *slog.Logger
}

var (
	_ drivers.Driver = (*Driver)(nil)
	_ http.Handler   = (*Driver)(nil)
)

// New builds an upload driver for a source; it starts nothing.
func New(spec drivers.Spec, cfg *Config) (*Driver, error) {
	if spec.Name == "" {
		return nil, errors.New("httpupload: source name is empty")
	}
	if cfg == nil {
		return nil, fmt.Errorf("httpupload: source %q: nil config", spec.Name)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("httpupload: source %q: %w", spec.Name, err)
	}
	return &Driver{spec: spec, cfg: *cfg, sem: make(chan struct{}, cfg.MaxConcurrent)}, nil
}

// ChecksOwnToken reports whether the source has its own token, which ServeHTTP checks;
// without one the daemon puts the admin token in front of it.
func (d *Driver) ChecksOwnToken() bool { return d.cfg.Token != "" }

// Run lets handlers emit until ctx ends, then waits for the requests inside an emit or
// a wait, which end with ctx, and returns nil.
func (d *Driver) Run(ctx context.Context, e drivers.Emitter) error {
	base := d.spec.Log
	if base == nil {
		base = slog.Default()
	}
	log := base.With("source", d.spec.Name, "driver", "httpupload")
	d.mu.Lock()
	if d.run != nil {
		d.mu.Unlock()
		return fmt.Errorf("httpupload: source %q: Run called while running", d.spec.Name)
	}
	d.run = &running{ctx: ctx, e: e, log: log}
	d.mu.Unlock()
	e.Health(true, nil)
	log.Info("accepting uploads")
	<-ctx.Done()
	d.mu.Lock()
	d.run = nil
	d.mu.Unlock()
	d.inflight.Wait()
	return nil
}

// enter returns the active Run and counts the request in; ok is false outside Run.
func (d *Driver) enter() (*running, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.run == nil {
		return nil, false
	}
	d.inflight.Add(1)
	return d.run, true
}

// result is one image's outcome, in the response.
type result struct {
	Index    *int              `json:"index,omitempty"`
	Filename string            `json:"filename,omitempty"`
	Status   int               `json:"status,omitempty"`
	TraceID  string            `json:"trace_id,omitempty"`
	Seq      uint64            `json:"seq,omitempty"`
	PartID   string            `json:"part_id,omitempty"`
	Verdicts []drivers.Verdict `json:"verdicts,omitzero"`
	Error    string            `json:"error,omitempty"`

	wait   func(context.Context) ([]drivers.Verdict, error)
	stop   func()
	waitTo time.Time
}

var imageTypes = map[string]bool{"image/png": true, "image/jpeg": true, "image/bmp": true}

func (d *Driver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if d.cfg.Token != "" && !d.authorized(req) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="edged upload"`)
		writeError(w, http.StatusUnauthorized, "missing or wrong bearer token for this source")
		return
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed; POST an image", req.Method))
		return
	}
	q := req.URL.Query()
	wait := false
	if v := q.Get("wait"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("wait: %q is not 1, 0, true or false", v))
			return
		}
		wait = b
	}
	if wait && d.spec.Verdicts == nil {
		writeError(w, http.StatusNotImplemented, "this source cannot wait for verdicts: the daemon offers none to it; upload without wait=1")
		return
	}
	ct := req.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	switch {
	case err != nil && ct == "":
		writeError(w, http.StatusUnsupportedMediaType, "no Content-Type; send image/png, image/jpeg, image/bmp or multipart/form-data")
		return
	case err != nil:
		writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: %v", ct, err))
		return
	case !imageTypes[mt] && mt != "multipart/form-data":
		writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not image/png, image/jpeg, image/bmp or multipart/form-data", mt))
		return
	}
	run, ok := d.enter()
	if !ok {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "source is not running")
		return
	}
	defer d.inflight.Done()
	// A request ends with the client or with the source, whichever goes first.
	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	defer context.AfterFunc(run.ctx, cancel)()

	if imageTypes[mt] {
		d.single(ctx, w, req, run, wait, q.Get("part_id"))
		return
	}
	d.batch(ctx, w, req, run, wait, params["boundary"])
}

func (d *Driver) authorized(req *http.Request) bool {
	h := req.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(d.cfg.Token)) == 1
}

func (d *Driver) single(ctx context.Context, w http.ResponseWriter, req *http.Request, run *running, wait bool, partID string) {
	body := http.MaxBytesReader(w, req.Body, int64(d.cfg.MaxBytes))
	res := d.take(ctx, run, body, req.ContentLength, partID, wait, nil)
	if res.Status != http.StatusAccepted {
		if res.Status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		writeJSON(w, res.Status, res)
		return
	}
	if wait {
		d.await(ctx, run, &res)
	}
	// The status line says it; the body of a single upload is the reading's.
	status := res.Status
	res.Status = 0
	writeJSON(w, status, res)
}

// take reads one image from src (n bytes, or -1 when unknown), checks it and emits it;
// with wait it starts watching for its verdicts first. Status is 202 when the pipeline
// took it.
func (d *Driver) take(ctx context.Context, run *running, src io.Reader, n int64, partID string, wait bool, buf *bytes.Buffer) result {
	res := result{PartID: partID}
	fail := func(status int, msg string) result {
		res.Status, res.Error = status, msg
		return res
	}
	if n > int64(d.cfg.MaxBytes) {
		return fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("image of %d bytes is over max_bytes %v", n, d.cfg.MaxBytes))
	}
	// Only MaxConcurrent images are in memory at once, from reading until the pipeline
	// takes them.
	select {
	case d.sem <- struct{}{}:
	case <-ctx.Done():
		return fail(http.StatusServiceUnavailable, "source stopping or request ended while waiting to be read")
	}
	defer func() { <-d.sem }()

	r := drivers.AcquireReading()
	if n >= 0 {
		if _, err := io.ReadFull(src, r.SetImage(drivers.FormatPNG, 0, 0, int(n))); err != nil {
			r.Release()
			return readFail(fail, err, d.cfg.MaxBytes)
		}
	} else {
		if buf == nil {
			buf = new(bytes.Buffer)
		}
		buf.Reset()
		_, err := buf.ReadFrom(io.LimitReader(src, int64(d.cfg.MaxBytes)+1))
		if err != nil {
			r.Release()
			return readFail(fail, err, d.cfg.MaxBytes)
		}
		if buf.Len() > int(d.cfg.MaxBytes) {
			r.Release()
			return fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("image is over max_bytes %v", d.cfg.MaxBytes))
		}
		copy(r.SetImage(drivers.FormatPNG, 0, 0, buf.Len()), buf.Bytes())
	}
	// The format comes from the content; a declared type that disagrees is the
	// client's slip, and the bytes are what the model sees.
	format, _, err := sniff.Image(r.Image.Data)
	if err != nil {
		r.Release()
		return fail(http.StatusBadRequest, fmt.Sprintf("not a decodable image (%s): %v", sniff.Reason(err), err))
	}
	now := time.Now()
	r.Image.Format = format
	r.Source, r.Seq, r.CapturedAt, r.PartID, r.TraceID = d.spec.Name, d.seq.Add(1), now, partID, newTraceID()
	if d.spec.Budget > 0 {
		r.Deadline = now.Add(d.spec.Budget)
	}
	res.TraceID, res.Seq = r.TraceID, r.Seq
	res.waitTo = now.Add(d.waitCap())
	if !r.Deadline.IsZero() && r.Deadline.Before(res.waitTo) {
		res.waitTo = r.Deadline
	}
	if wait {
		res.wait, res.stop = d.spec.Verdicts.Watch(d.spec.Name, r.TraceID)
	}
	p := run.e.Emit(ctx, r)
	if !p.Accepted {
		if res.stop != nil {
			res.stop()
		}
		run.log.Debug("upload refused by the pipeline", "trace_id", res.TraceID, "occupancy", p.Occupancy)
		return fail(http.StatusServiceUnavailable, "pipeline full: the image was not taken; retry later")
	}
	res.Status = http.StatusAccepted
	return res
}

func readFail(fail func(int, string) result, err error, limit any) result {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("image is over max_bytes %v", limit))
	}
	return fail(http.StatusBadRequest, fmt.Sprintf("read image: %v", err))
}

func (d *Driver) waitCap() time.Duration {
	if w := d.cfg.WaitTimeout.Std(); w > 0 {
		return w
	}
	if d.spec.Budget > 0 {
		return d.spec.Budget
	}
	return defaultWait
}

// await waits for the verdicts on an emitted image and sets the status: 200 with all
// of them, 504 with those that came when the deadline passed first, 503 when the
// source stops.
func (d *Driver) await(ctx context.Context, run *running, res *result) {
	defer res.stop()
	wctx, cancel := context.WithDeadline(ctx, res.waitTo)
	defer cancel()
	vs, err := res.wait(wctx)
	res.Verdicts = vs
	if res.Verdicts == nil {
		res.Verdicts = []drivers.Verdict{}
	}
	switch {
	case err == nil:
		res.Status = http.StatusOK
	case errors.Is(err, context.DeadlineExceeded):
		res.Status, res.Error = http.StatusGatewayTimeout, "deadline passed before every verdict came"
	case run.ctx.Err() != nil:
		res.Status, res.Error = http.StatusServiceUnavailable, "source stopped while waiting for verdicts"
	default:
		res.Status, res.Error = http.StatusGatewayTimeout, fmt.Sprintf("waiting for verdicts: %v", err)
	}
}

// batch takes a multipart/form-data upload: each file part is one image, read and
// emitted as it streams in. A text field named part_id sets the part id of the file
// part after it; without one, the file name less its extension is the part id.
func (d *Driver) batch(ctx context.Context, w http.ResponseWriter, req *http.Request, run *running, wait bool, boundary string) {
	if boundary == "" {
		writeError(w, http.StatusBadRequest, "multipart/form-data without a boundary")
		return
	}
	// The whole body: every image at its limit, plus room for part headers and fields.
	limit := int64(d.cfg.MaxBytes)*int64(d.cfg.MaxBatch) + 1<<20
	mr := multipart.NewReader(http.MaxBytesReader(w, req.Body, limit), boundary)
	var (
		results []result
		buf     bytes.Buffer
		field   string
	)
	for i := 0; ; {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			status, msg := http.StatusBadRequest, fmt.Sprintf("multipart body: %v", err)
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				status, msg = http.StatusRequestEntityTooLarge, fmt.Sprintf("batch is over %d bytes", limit)
			}
			results = append(results, result{Status: status, Error: msg})
			break
		}
		if p.FileName() == "" {
			if p.FormName() == "part_id" {
				b, err := io.ReadAll(io.LimitReader(p, 1024))
				if err != nil {
					results = append(results, result{Status: http.StatusBadRequest, Error: fmt.Sprintf("field part_id: %v", err)})
					break
				}
				field = string(b)
			}
			p.Close()
			continue
		}
		idx := i
		i++
		partID := field
		field = ""
		if partID == "" {
			base := path.Base(strings.ReplaceAll(p.FileName(), `\`, "/"))
			partID = strings.TrimSuffix(base, path.Ext(base))
		}
		var res result
		if idx >= d.cfg.MaxBatch {
			res = result{Status: http.StatusRequestEntityTooLarge, Error: fmt.Sprintf("more than max_batch %d images", d.cfg.MaxBatch)}
		} else if pct := p.Header.Get("Content-Type"); pct != "" && !partTypeOK(pct) {
			res = result{Status: http.StatusUnsupportedMediaType, Error: fmt.Sprintf("part Content-Type %q is not image/png, image/jpeg or image/bmp", pct)}
		} else {
			res = d.take(ctx, run, p, -1, partID, wait, &buf)
		}
		res.Index, res.Filename = &idx, p.FileName()
		if res.PartID == "" {
			res.PartID = partID
		}
		p.Close()
		results = append(results, res)
		if idx >= d.cfg.MaxBatch {
			break
		}
	}
	if len(results) == 0 {
		writeError(w, http.StatusBadRequest, "multipart body holds no image part")
		return
	}
	if wait {
		for i := range results {
			if results[i].Status == http.StatusAccepted {
				d.await(ctx, run, &results[i])
			}
		}
	}
	status := results[0].Status
	for _, r := range results[1:] {
		if r.Status != status {
			status = http.StatusMultiStatus
		}
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, struct {
		Results []result `json:"results"`
	}{results})
}

func partTypeOK(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (imageTypes[mt] || mt == "application/octet-stream")
}

func newTraceID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, result{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
