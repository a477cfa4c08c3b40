package linepage

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

//go:embed static
var static embed.FS

// assetTypes are the content types of the embedded files, set here rather than taken
// from the system's MIME tables, which a minimal box may not have.
var assetTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

// csp keeps the page to its own box: nothing is fetched from anywhere else, so it
// works the same with the plant cut off from the internet.
const csp = "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

const titlePlaceholder = "{{title}}"

// abortGrace is how long an ended stream may still take to write its last bytes.
const abortGrace = 200 * time.Millisecond

func renderIndex(title string) ([]byte, error) {
	b, err := static.ReadFile("static/index.html")
	if err != nil {
		return nil, fmt.Errorf("read embedded page %q: %w", "static/index.html", err)
	}
	if title == "" {
		title = "edged"
	}
	return []byte(strings.ReplaceAll(string(b), titlePlaceholder, html.EscapeString(title))), nil
}

// Routes are the page's handlers, keyed by Go 1.22 patterns. All are GET and need no
// token: the page only shows.
func (p *Page) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"GET /{$}":                 http.HandlerFunc(p.serveIndex),
		"GET /line/{file}":         http.HandlerFunc(p.serveAsset),
		"GET /v1/events":           http.HandlerFunc(p.serveEvents),
		"GET /v1/line/images/{id}": http.HandlerFunc(p.serveImage),
		"GET /v1/line/snapshot":    http.HandlerFunc(p.serveSnapshot),
	}
}

func etagOf(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}

func (p *Page) serveIndex(w http.ResponseWriter, r *http.Request) {
	serveBytes(w, r, "index.html", p.index, etagOf(p.index))
}

// assetTags are computed once: the embedded files never change in a running binary.
var assetTags = sync.OnceValue(func() map[string]string {
	tags := make(map[string]string)
	_ = fs.WalkDir(static, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(name)
		if err != nil {
			return err
		}
		tags[path.Base(name)] = etagOf(b)
		return nil
	})
	return tags
})

func (p *Page) serveAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if name == "index.html" {
		p.serveIndex(w, r)
		return
	}
	tag, ok := assetTags()[name]
	if !ok {
		http.Error(w, fmt.Sprintf("line page has no file %q", name), http.StatusNotFound)
		return
	}
	b, err := static.ReadFile("static/" + name)
	if err != nil {
		http.Error(w, fmt.Sprintf("read line page file %q: %v", name, err), http.StatusInternalServerError)
		return
	}
	serveBytes(w, r, name, b, tag)
}

func serveBytes(w http.ResponseWriter, r *http.Request, name string, b []byte, etag string) {
	h := w.Header()
	ct, ok := assetTypes[path.Ext(name)]
	if !ok {
		ct = "application/octet-stream"
	}
	h.Set("Content-Type", ct)
	// no-cache with an ETag: a browser revalidates, so an upgraded edged serves its new
	// page at once, and an unchanged one costs a 304.
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", etag)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", csp)
	h.Set("Referrer-Policy", "no-referrer")
	http.ServeContent(w, r, name, time.Time{}, strings.NewReader(string(b)))
}

func (p *Page) serveSnapshot(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	s := p.snapshotLocked()
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if err := json.NewEncoder(w).Encode(s); err != nil {
		p.log.Debug("line page snapshot not sent", "err", err)
	}
}

// serveEvents streams the snapshot, then every result and status event, until the
// browser goes away, the page stops, or the client is dropped for being slow.
func (p *Page) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	c, snap, err := p.subscribe(cancel)
	if err != nil {
		http.Error(w, "line page events: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer p.unsubscribe(c)
	// The stream is meant to stay open: a server-wide write timeout must not cut it.
	_ = rc.SetWriteDeadline(time.Time{})
	// A write to a browser that stopped reading blocks; when the stream is ended (the
	// client dropped, the page stopped) a deadline wakes that write, so no handler
	// outlives its stream. The grace lets a stream that is not stuck end cleanly.
	aborted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = rc.SetWriteDeadline(time.Now().Add(abortGrace))
		close(aborted)
	})
	defer func() {
		if !stop() {
			<-aborted
		}
	}()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)

	buf := make([]byte, 0, len(snap)+64)
	buf = append(buf, "retry: 1000\nevent: snapshot\ndata: "...)
	buf = append(buf, snap...)
	buf = append(buf, "\n\n"...)
	if p.cfg.Status != nil {
		// The page shows the box's state at once rather than a tick later.
		if frame, err := statusFrame(p.cfg.Status()); err == nil {
			buf = append(buf, frame...)
		}
	}
	if !p.write(w, rc, buf) {
		return
	}
	ping := time.NewTicker(p.ping)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ping.C:
			if !p.write(w, rc, []byte(": ping\n\n")) {
				return
			}
		case frame := <-c.ch:
			if ctx.Err() != nil {
				return
			}
			if !p.write(w, rc, frame) {
				return
			}
		}
	}
}

func (p *Page) write(w http.ResponseWriter, rc *http.ResponseController, b []byte) bool {
	if _, err := w.Write(b); err != nil {
		p.log.Debug("line page stream ended", "err", err)
		return false
	}
	if err := rc.Flush(); err != nil {
		p.log.Debug("line page stream ended", "err", err)
		return false
	}
	return true
}
