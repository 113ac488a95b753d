package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/tandem-dhcp/tandem/control"
	"go.uber.org/zap/zapcore"
)

// newLogger returns the diagnostic logger: level is debug, info, warn or
// error; format is console or json. Sampling is off: an operator tool must
// never drop a line.
func newLogger(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	ec.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	switch format {
	case "console":
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	case "json":
		enc = zapcore.NewJSONEncoder(ec)
	default:
		return nil, fmt.Errorf("--log-format %q: want console or json", format)
	}
	ws := zapcore.Lock(zapcore.AddSync(w))
	// zapcore.NewCore with no sampler wrapped around it: every entry is written.
	return zap.New(zapcore.NewCore(enc, ws, lvl), zap.ErrorOutput(ws)), nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// writeJSON writes v as one indented JSON object and a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// fmtUnix formats Unix seconds as RFC 3339 in UTC; "" for 0 (unset).
func fmtUnix(s int64) string { return control.UnixTime(s) }

// fmtUnixNano formats Unix nanoseconds as RFC 3339 (with fraction) in UTC; "" for 0.
func fmtUnixNano(ns int64) string {
	if ns == 0 {
		return ""
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}

// fmtTime formats t as RFC 3339 (with fraction) in UTC; "" for the zero time.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// strOrNil returns nil for "", so that JSON says null.
func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// orDash returns "-" for "" (text tables).
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// confirm asks question on stdout unless --yes was given and fails with
// "not confirmed" unless the answer on stdin is "yes". Every command that
// changes a server's data or failover state uses it.
func confirm(e *env, c *cli.Context, question string) error {
	if c.Bool("yes") {
		return nil
	}
	fmt.Fprint(e.stdout, question+" Type 'yes': ")
	var answer string
	fmt.Fscanln(os.Stdin, &answer)
	if answer != "yes" {
		return cli.Exit("not confirmed: nothing changed", exitFailure)
	}
	return nil
}
