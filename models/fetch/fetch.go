// Package fetch downloads a model file from the plant's model server. A model is tens or
// hundreds of megabytes pulled over plant networks that drop connections and stall, so
// the download resumes from where it was (HTTP Range) instead of starting over, and it
// is read as a stream so the caller can hash and store it without holding it in memory.
//
// Retries: the retry count is of consecutive failures without progress. A failure after
// the reader handed out new bytes since the previous failure starts the count again, so a
// long download over a link that drops every few megabytes still completes, while a server
// that fails at the same byte again and again is given up on after Retries attempts. The
// whole download stays bounded by Config.Timeout.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultTimeout      = 10 * time.Minute
	DefaultStallTimeout = 30 * time.Second
	DefaultRetries      = 5
	DefaultBackoff      = 500 * time.Millisecond
	// MaxBackoff caps the doubling backoff and a server's Retry-After, so a server asking
	// for an hour's pause does not hold a model push for an hour.
	MaxBackoff = 30 * time.Second
)

// Errors a download can end with, besides the network's and the context's.
var (
	// ErrTooLarge: the server has or sends more bytes than the expected size.
	ErrTooLarge = errors.New("more bytes than expected")
	// ErrTruncated: the server has fewer bytes than the expected size, or the download
	// ended short after every retry.
	ErrTruncated = errors.New("fewer bytes than expected")
	// ErrStatus: the server answered with a status that is not retried (404, 403, ...).
	ErrStatus = errors.New("unexpected http status")
)

// Config tunes a download. The zero value is ready to use.
type Config struct {
	// Client makes the requests; nil uses a shared client with a connection pool.
	Client *http.Client
	// Timeout bounds the whole download, retries included; 0 is DefaultTimeout.
	Timeout time.Duration
	// StallTimeout: when no byte arrives for this long (headers included) the connection
	// is dropped and the download resumes; 0 is DefaultStallTimeout.
	StallTimeout time.Duration
	// Retries is how many consecutive failures without progress are retried; 0 is
	// DefaultRetries, a negative value retries none.
	Retries int
	// Backoff is the wait before the first retry; it doubles (with jitter) up to
	// MaxBackoff; 0 is DefaultBackoff.
	Backoff time.Duration
	// Log receives a line for each retry; nil uses slog.Default().
	Log *slog.Logger
}

// sharedTransport is kept apart from http.DefaultTransport so that downloads have their
// own pool and timeouts. Compression is off: a gzip-encoded reply would turn Range
// offsets (in encoded bytes) and the bytes handed out (decoded) into different counts.
var sharedTransport = &http.Transport{
	Proxy: http.ProxyFromEnvironment,
	DialContext: (&net.Dialer{
		Timeout:   10 * time.Second,
		KeepAlive: 30 * time.Second,
	}).DialContext,
	ForceAttemptHTTP2:     true,
	TLSHandshakeTimeout:   10 * time.Second,
	ResponseHeaderTimeout: 30 * time.Second,
	ExpectContinueTimeout: time.Second,
	IdleConnTimeout:       90 * time.Second,
	MaxIdleConns:          16,
	MaxIdleConnsPerHost:   4,
	DisableCompression:    true,
}

var sharedClient = &http.Client{Transport: sharedTransport}

// CloseIdleConnections closes the shared client's idle connections (at shutdown, and in
// tests that check no goroutine outlives them).
func CloseIdleConnections() { sharedClient.CloseIdleConnections() }

// Open starts downloading rawURL, which must hold exactly size bytes, and returns a
// reader of those bytes. The first request is made before Open returns, so a missing
// file (404) or a refused connection after the retries is an error from Open. Reads
// resume after cut or stalled connections; the reader errors when the server has more
// or fewer bytes than size. Close ends the download; it may be called while a Read is
// blocked, to abort it. Cancelling ctx stops the download at once.
func Open(ctx context.Context, cfg Config, rawURL string, size int64) (io.ReadCloser, error) {
	shown := Redact(rawURL)
	if size < 0 {
		return nil, fmt.Errorf("fetch %s: size %d is negative", shown, size)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: bad url", shown)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("fetch %s: scheme %q is not http or https", shown, u.Scheme)
	}
	cfg = cfg.withDefaults()
	dctx, cancel := context.WithTimeoutCause(ctx, cfg.Timeout,
		fmt.Errorf("download timeout %v: %w", cfg.Timeout, context.DeadlineExceeded))
	r := &reader{cfg: cfg, ctx: dctx, cancel: cancel, url: rawURL, shown: shown, size: size, lastFail: -1}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.connect(); err != nil {
		cancel()
		return nil, err
	}
	return r, nil
}

func (c Config) withDefaults() Config {
	if c.Client == nil {
		c.Client = sharedClient
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = DefaultStallTimeout
	}
	if c.Retries == 0 {
		c.Retries = DefaultRetries
	} else if c.Retries < 0 {
		c.Retries = 0
	}
	if c.Backoff <= 0 {
		c.Backoff = DefaultBackoff
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c
}

// Redact returns rawURL without its query, fragment and user info, which may carry
// tokens that must not reach logs or events.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		// Cut by hand: an unparsable URL may still hold a secret after '?'.
		s, _, _ := strings.Cut(rawURL, "?")
		s, _, _ = strings.Cut(s, "#")
		if i := strings.LastIndex(s, "@"); i >= 0 {
			if j := strings.Index(s, "://"); j >= 0 && j < i {
				s = s[:j+3] + s[i+1:]
			}
		}
		return s
	}
	u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment, u.User = "", false, "", "", nil
	return u.String()
}

// reader is one download. mu is held by Read for its whole run; Close cancels first so
// that a blocked Read returns and lets it in.
type reader struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	url    string
	shown  string
	size   int64

	mu  sync.Mutex
	off int64 // bytes handed out
	err error // sticky: once set every Read returns it

	// the current attempt
	body      io.ReadCloser
	reqCancel context.CancelFunc
	stall     *time.Timer
	stalled   atomic.Bool

	failures int   // consecutive failures without progress
	lastFail int64 // r.off at the previous failure
}

// permanent marks an error that retrying cannot cure.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// retryAfter carries a server's Retry-After with a retried status.
type retryAfter struct {
	err  error
	wait time.Duration
}

func (e retryAfter) Error() string { return e.err.Error() }
func (e retryAfter) Unwrap() error { return e.err }

func (r *reader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		if r.err != nil {
			return 0, r.err
		}
		if r.body == nil {
			if err := r.connect(); err != nil {
				r.err = err
				return 0, err
			}
			continue
		}
		if r.off == r.size {
			return 0, r.finish()
		}
		if len(p) == 0 {
			return 0, nil
		}
		q := p
		if rest := r.size - r.off; int64(len(q)) > rest {
			q = q[:rest]
		}
		n, err := r.body.Read(q)
		if n > 0 {
			r.stall.Reset(r.cfg.StallTimeout)
			r.off += int64(n)
			return n, nil
		}
		if err == nil {
			continue
		}
		if err == io.EOF {
			err = fmt.Errorf("connection ended: %w", io.ErrUnexpectedEOF)
		}
		if ferr := r.fail(err); ferr != nil {
			r.err = ferr
			return 0, ferr
		}
	}
}

// finish checks the server has nothing past size, and ends the attempt.
func (r *reader) finish() error {
	var one [1]byte
	n, err := io.ReadFull(r.body, one[:])
	r.endAttempt()
	switch {
	case n > 0:
		r.err = r.errorf("server sends more than %d bytes: %w", r.size, ErrTooLarge)
	case err == io.EOF:
		r.err = io.EOF
	case r.ctx.Err() != nil:
		r.err = r.ctxErr()
	default:
		// All size bytes arrived and the connection broke on the check for more: the
		// bytes are complete, and the caller's hash check judges their content.
		r.cfg.Log.Debug("model download: connection broke after the last byte", "url", r.shown, "err", err)
		r.err = io.EOF
	}
	return r.err
}

func (r *reader) Close() error {
	r.cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endAttempt()
	if r.err == nil {
		r.err = fmt.Errorf("fetch %s: read after close", r.shown)
	}
	return nil
}

func (r *reader) errorf(format string, a ...any) error {
	return fmt.Errorf("fetch %s: at byte %d of %d: %w", r.shown, r.off, r.size, fmt.Errorf(format, a...))
}

func (r *reader) ctxErr() error {
	return r.errorf("%w", context.Cause(r.ctx))
}

func (r *reader) endAttempt() {
	if r.stall != nil {
		r.stall.Stop()
		r.stall = nil
	}
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
	if r.reqCancel != nil {
		r.reqCancel()
		r.reqCancel = nil
	}
}

// fail ends the current attempt after err and waits out the backoff; it returns the
// error that ends the download, or nil to try again.
func (r *reader) fail(err error) error {
	stalled := r.stalled.Load()
	r.endAttempt()
	if r.ctx.Err() != nil {
		return r.ctxErr()
	}
	var perm permanent
	if errors.As(err, &perm) {
		return r.errorf("%w", perm.err)
	}
	if stalled {
		err = fmt.Errorf("no byte for %v: stalled", r.cfg.StallTimeout)
	}
	if r.off > r.lastFail {
		r.failures = 0
	}
	r.lastFail = r.off
	r.failures++
	if r.failures > r.cfg.Retries {
		if r.cfg.Retries > 0 {
			return r.errorf("giving up after %d retries without progress: %w", r.cfg.Retries, err)
		}
		return r.errorf("%w", err)
	}
	wait := r.cfg.Backoff << (r.failures - 1)
	if wait > MaxBackoff || wait <= 0 {
		wait = MaxBackoff
	}
	// Jitter spreads the retries of many boxes pulling the same model from one server.
	wait = wait/2 + rand.N(wait/2+1)
	var ra retryAfter
	if errors.As(err, &ra) && ra.wait > wait {
		wait = min(ra.wait, MaxBackoff)
	}
	r.cfg.Log.Warn("model download: retrying", "url", r.shown, "offset", r.off, "size", r.size,
		"attempt", r.failures, "wait", wait, "err", err)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-r.ctx.Done():
		return r.ctxErr()
	}
}

// connect makes requests until one is answered with the bytes from r.off on, or the
// download ends. It leaves r.body positioned at r.off.
func (r *reader) connect() error {
	for {
		err := r.attempt()
		if err == nil {
			return nil
		}
		if ferr := r.fail(err); ferr != nil {
			return ferr
		}
	}
}

func (r *reader) attempt() error {
	rctx, rcancel := context.WithCancel(r.ctx)
	r.reqCancel = rcancel
	r.stalled.Store(false)
	// The stall timer runs from the request on, so a server that accepts the connection
	// and never answers is caught like one that stops in the middle of the body.
	r.stall = time.AfterFunc(r.cfg.StallTimeout, func() {
		r.stalled.Store(true)
		rcancel()
	})
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, r.url, nil)
	if err != nil {
		return permanent{fmt.Errorf("request: %w", err)}
	}
	req.Header.Set("Accept-Encoding", "identity")
	if r.off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(r.off, 10)+"-")
	}
	resp, err := r.cfg.Client.Do(req)
	if err != nil {
		// The url in a *url.Error may hold the query; keep only what went wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return err
	}
	r.body = resp.Body
	skip := int64(0)
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength > r.size {
			return permanent{fmt.Errorf("server has %d bytes, want %d: %w", resp.ContentLength, r.size, ErrTooLarge)}
		}
		if resp.ContentLength >= 0 && resp.ContentLength < r.size {
			return permanent{fmt.Errorf("server has %d bytes, want %d: %w", resp.ContentLength, r.size, ErrTruncated)}
		}
		// A server that ignores Range sends the whole file again: drop what was
		// already handed out rather than hand it out twice.
		skip = r.off
	case http.StatusPartialContent:
		start, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return permanent{err}
		}
		if start != r.off {
			return fmt.Errorf("server resumes at byte %d, asked for %d", start, r.off)
		}
		if total > r.size {
			return permanent{fmt.Errorf("server has %d bytes, want %d: %w", total, r.size, ErrTooLarge)}
		}
		if total >= 0 && total < r.size {
			return permanent{fmt.Errorf("server has %d bytes, want %d: %w", total, r.size, ErrTruncated)}
		}
		if resp.ContentLength > r.size-r.off {
			return permanent{fmt.Errorf("server sends %d bytes from byte %d, want %d: %w", resp.ContentLength, r.off, r.size-r.off, ErrTooLarge)}
		}
	case http.StatusRequestedRangeNotSatisfiable:
		return permanent{fmt.Errorf("server refuses to resume at byte %d (%s): the file is shorter than %d bytes: %w", r.off, resp.Status, r.size, ErrTruncated)}
	default:
		serr := fmt.Errorf("server answers %s: %w", resp.Status, ErrStatus)
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			return retryAfter{serr, parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
		}
		return permanent{serr}
	}
	if skip > 0 {
		r.cfg.Log.Info("model download: server ignores range, skipping what was read", "url", r.shown, "offset", skip)
		n, err := io.CopyN(io.Discard, &resetReader{r.body, r.stall, r.cfg.StallTimeout}, skip)
		if err != nil {
			if err == io.EOF {
				err = fmt.Errorf("connection ended after %d of %d bytes to skip: %w", n, skip, io.ErrUnexpectedEOF)
			}
			return err
		}
	}
	r.stall.Reset(r.cfg.StallTimeout)
	return nil
}

// resetReader pushes the stall timer back on every read, for the bytes that are skipped.
type resetReader struct {
	r     io.Reader
	t     *time.Timer
	stall time.Duration
}

func (s *resetReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.t.Reset(s.stall)
	}
	return n, err
}

// parseContentRange reads "bytes start-end/total"; total is -1 when the server gives "*".
func parseContentRange(s string) (start, total int64, err error) {
	bad := func() (int64, int64, error) {
		return 0, 0, fmt.Errorf("content-range %q is not \"bytes start-end/total\"", s)
	}
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return bad()
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return bad()
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return bad()
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return bad()
	}
	if tot == "*" {
		return start, -1, nil
	}
	total, err = strconv.ParseInt(tot, 10, 64)
	if err != nil || total <= end {
		return bad()
	}
	return start, total, nil
}

// parseRetryAfter reads seconds or an HTTP date; 0 when absent or unreadable.
func parseRetryAfter(s string, now time.Time) time.Duration {
	if s == "" {
		return 0
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(MaxBackoff/time.Second) {
			return MaxBackoff
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(s); err == nil {
		return min(max(t.Sub(now), 0), MaxBackoff)
	}
	return 0
}
