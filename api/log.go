package api

import (
	"log"
	"log/slog"
	"strings"
)

// slogErrorLog routes net/http's and promhttp's error lines into slog.
type slogErrorLog struct{ l *slog.Logger }

func (s slogErrorLog) Println(v ...any) {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strings.TrimSpace(fmtAny(x))
	}
	s.l.Warn(strings.Join(parts, " "), "component", "http")
}

func (s slogErrorLog) Write(p []byte) (int, error) {
	s.l.Warn(strings.TrimSpace(string(p)), "component", "http")
	return len(p), nil
}

func (s slogErrorLog) std() *log.Logger { return log.New(s, "", 0) }

func fmtAny(x any) string {
	if e, ok := x.(error); ok {
		return e.Error()
	}
	if s, ok := x.(string); ok {
		return s
	}
	return slog.AnyValue(x).String()
}
