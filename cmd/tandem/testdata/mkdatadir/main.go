// Command mkdatadir makes a Tandem data dir holding N ACTIVE leases in
// 2001:db8:1::/108, valid for a day from now. The cmd/tandem tests build it
// without the race detector (like the tandem binary), so making a
// 100k-binding data dir stays fast when the tests run under -race.
//
// Usage: mkdatadir DIR N
package main

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/tandem-dhcp/tandem/fsm"
	"github.com/tandem-dhcp/tandem/raftstore"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: mkdatadir DIR N")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[2])
	if err == nil {
		err = run(os.Args[1], n)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(dir string, n int) error {
	st, err := raftstore.Open(raftstore.Config{DataDir: dir})
	if err != nil {
		return err
	}
	defer st.Close()
	now := time.Now()
	for i := 0; i < n; i += 1000 {
		cmd := &fsm.Command{Type: fsm.CmdTxn, Time: now.UnixNano(), Origin: fsm.OriginClient, Note: "REQUEST"}
		for j := i; j < i+1000 && j < n; j++ {
			a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1}
			a[13], a[14], a[15] = byte(j>>16), byte(j>>8), byte(j)
			r := fsm.AddrResource(fsm.IANA, netip.AddrFrom16(a))
			b := fsm.Binding{Resource: r, Status: fsm.StatusActive, DUID: string([]byte{0, 3, 0, 1, 2, 0x42, byte(j >> 16), byte(j >> 8), byte(j)}),
				IAID: uint32(j), PreferredLifetime: 43200, ValidLifetime: 86400, CLTT: now.Unix(), StartTimeOfState: now.Unix(),
				StateExpirationTime: now.Unix() + 86400}
			cmd.Ops = append(cmd.Ops, fsm.Op{Resource: r, Binding: b})
		}
		if _, err := st.Apply(cmd); err != nil {
			return err
		}
	}
	return nil
}
