// Package api provides edged's HTTP server: health and readiness probes, Prometheus
// metrics, the status document and the admin endpoints.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition; it returns nil when satisfied, or why not.
type Check struct {
	Name string
	Fn   func() error
}

// Config wires the server.
type Config struct {
	// Listen is host:port; port 0 picks a free port (see Addr).
	Listen string
	// AdminToken guards pprof and every mutating call; empty disables them.
	AdminToken string
	Gatherer   prometheus.Gatherer
	// Ready lists what /readyz waits for.
	Ready []Check
	// Status returns the document served at /v1/status.
	Status func() any
	Log    *slog.Logger
}

// Server is the admin and metrics HTTP server.
type Server struct {
	cfg   Config
	mux   *http.ServeMux
	ready chan struct{}
	mu    sync.Mutex
	addr  string
}

// New builds the server; it listens only in Run.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), ready: make(chan struct{})}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	if cfg.Gatherer != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{ErrorLog: slogErrorLog{cfg.Log}}))
	}
	s.mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		var doc any = struct{}{}
		if cfg.Status != nil {
			doc = cfg.Status()
		}
		writeJSON(w, http.StatusOK, doc)
	})
	s.mux.Handle("/debug/pprof/", s.admin(http.HandlerFunc(pprof.Index)))
	s.mux.Handle("/debug/pprof/cmdline", s.admin(http.HandlerFunc(pprof.Cmdline)))
	s.mux.Handle("/debug/pprof/profile", s.admin(http.HandlerFunc(pprof.Profile)))
	s.mux.Handle("/debug/pprof/symbol", s.admin(http.HandlerFunc(pprof.Symbol)))
	s.mux.Handle("/debug/pprof/trace", s.admin(http.HandlerFunc(pprof.Trace)))
	return s
}

// Handle adds a route (Go 1.22 pattern); mutating routes should be wrapped in Admin.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Admin wraps h so it needs the admin bearer token.
func (s *Server) Admin(h http.Handler) http.Handler { return s.admin(h) }

func (s *Server) admin(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.AdminToken == "" {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "admin endpoints are off: set http.admin_token"})
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.AdminToken)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="edged"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "admin bearer token missing or wrong"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	var failing []string
	for _, c := range s.cfg.Ready {
		if err := c.Fn(); err != nil {
			failing = append(failing, c.Name+": "+err.Error())
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(failing) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready")
		for _, f := range failing {
			fmt.Fprintln(w, f)
		}
		return
	}
	fmt.Fprintln(w, "ready")
}

// Addr is the bound address once Ready is closed.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Ready is closed once the server listens.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run listens and serves until ctx ends, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("http listen %s: %w; set http.listen to a free address", s.cfg.Listen, err)
	}
	s.mu.Lock()
	s.addr = ln.Addr().String()
	s.mu.Unlock()
	close(s.ready)
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slogErrorLog{s.cfg.Log}.std(),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http server: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
