package raftstore

import (
	"fmt"
	"io"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
)

// newRaftLogger returns an hclog.Logger that forwards raft's log lines at Info
// and above to zap with structured fields.
func newRaftLogger(z *zap.Logger) hclog.Logger {
	il := hclog.NewInterceptLogger(&hclog.LoggerOptions{Name: "raft", Output: io.Discard, Level: hclog.Info})
	il.RegisterSink(zapSink{z.Named("raft")})
	return il
}

type zapSink struct{ z *zap.Logger }

func (s zapSink) Accept(name string, level hclog.Level, msg string, args ...interface{}) {
	if level < hclog.Info {
		return
	}
	fields := make([]zap.Field, 0, len(args)/2)
	for i := 0; i+1 < len(args); i += 2 {
		fields = append(fields, zap.Any(fmt.Sprint(args[i]), args[i+1]))
	}
	switch {
	case level >= hclog.Error:
		s.z.Error(msg, fields...)
	case level == hclog.Warn:
		s.z.Warn(msg, fields...)
	default:
		s.z.Info(msg, fields...)
	}
}
