package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgedrun/edged/drivers/opcua"
)

const opcuaUsage = `usage: edged opcua cert -out DIR [-host NAMES] [-uri URI] [-days N]

Makes a self-signed client certificate and key for OPC UA security policy
Basic256Sha256: DIR/client.crt.pem and DIR/client.key.pem (the key readable by its
owner only). Put the certificate in the server's trusted folder, and name both files
in the source's opcua.cert_file and opcua.key_file.
`

func cmdOPCUA(args []string) error {
	if len(args) == 0 || args[0] != "cert" {
		fmt.Fprint(os.Stderr, opcuaUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("edged opcua cert", flag.ContinueOnError)
	out := fs.String("out", "", "folder for client.crt.pem and client.key.pem (required)")
	host, _ := os.Hostname()
	hosts := fs.String("host", host, "comma-separated DNS names and IP addresses of this box, put in the certificate")
	uri := fs.String("uri", "", "application URI (default urn:edged:HOST)")
	days := fs.Int("days", 825, "days the certificate is valid")
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage
	}
	if *out == "" || *days <= 0 {
		fmt.Fprint(os.Stderr, opcuaUsage)
		return errUsage
	}
	var names []string
	for _, h := range strings.Split(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			names = append(names, h)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("-host: no names given")
	}
	if *uri == "" {
		*uri = "urn:edged:" + names[0]
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	cert, key := filepath.Join(*out, "client.crt.pem"), filepath.Join(*out, "client.key.pem")
	for _, p := range []string{cert, key} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s exists; remove it first (a new key invalidates the certificate the servers trust)", p)
		}
	}
	if err := opcua.GenerateCertificate(cert, key, names, *uri, time.Duration(*days)*24*time.Hour); err != nil {
		return err
	}
	fmt.Printf("wrote %s and %s (application URI %s)\n", cert, key, *uri)
	return nil
}
