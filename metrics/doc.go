// Package metrics exports the daemon's state to Prometheus: a registry, a
// collector that reads the existing counters and gauges at scrape time, the
// raft commit latency histogram, and the HTTP listener serving /metrics.
//
// It owns the metric names: Kea's statistic names where the meaning matches,
// in Prometheus syntax (dashes become underscores, a tandem_ prefix, _total
// on counters: pkt6-received is tandem_pkt6_received_total), with the Kea
// name in the HELP text. docs/operations.md lists them.
//
// Invariants: nothing here is on the packet path. The server's counters are
// atomics the collector loads at scrape time (never counted twice); pool
// gauges come from server.Pools and failover gauges from the endpoint's
// Status, both safe to call from the scraping goroutine. The only thing fed
// from outside a scrape is ObserveCommit, which raftstore calls once per
// committed Apply (raftstore.Config.OnApply): raftstore itself does not
// import Prometheus.
//
// Goroutines: Serve runs the HTTP server until its context is done; Collect
// runs on the scraping request's goroutine.
package metrics
