// Command standin plays edged for the tests of install.sh, upgrade.sh and uninstall.sh:
// it answers `validate -c FILE` and `version`, and `run -c FILE` serves /readyz and
// /version on the config's http.listen until SIGTERM. Built with -X main.mode=broken it
// exits 1 at start, as a release that cannot come up would; with -X main.mode=refuse it
// refuses every config.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

var (
	version = "dev"
	mode    = "good"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "version" {
		fmt.Println("edged", version)
		return
	}
	if len(os.Args) != 4 || os.Args[2] != "-c" {
		fmt.Fprintln(os.Stderr, "usage: edged run|validate -c FILE | version")
		os.Exit(2)
	}
	listen, err := readListen(os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	switch os.Args[1] {
	case "validate":
		if mode == "refuse" {
			fmt.Fprintln(os.Stderr, os.Args[3]+": http.listen: refused by edged", version)
			os.Exit(1)
		}
		fmt.Println(os.Args[3] + ": ok")
	case "run":
		if mode == "broken" {
			fmt.Fprintln(os.Stderr, "edged", version, "cannot start")
			os.Exit(1)
		}
		if err := serve(listen); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

// readListen finds http.listen in a config laid out as config/demo.yaml is.
func readListen(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	inHTTP := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, " ") {
			inHTTP = strings.HasPrefix(line, "http:")
			continue
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "listen:"); ok && inHTTP {
			return strings.TrimSpace(v), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("config %s: %w", path, err)
	}
	return "", fmt.Errorf("config %s: no http.listen", path)
}

func serve(listen string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ready") })
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, version) })
	srv := &http.Server{Addr: listen, Handler: mux}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return fmt.Errorf("listen %s: %w", listen, err)
	case <-ctx.Done():
	}
	if err := srv.Shutdown(context.Background()); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
