package raftstore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-dhcp/tandem/internal/netns"
	"github.com/tandem-dhcp/tandem/internal/testfs"
)

// TestDiskFullThenRecovers runs a store on a 4 MiB tmpfs. Once a log write
// fails with ENOSPC, every Apply fails with ErrDiskFull naming the data dir
// (also while raft, which stepped down after the failed write, is not yet
// leader again), nothing is applied, and once space is freed Apply works
// again on the same Store.
func TestDiskFullThenRecovers(t *testing.T) {
	mnt := testfs.Tmpfs(t, 4<<20)
	dir := filepath.Join(mnt, "data")
	s := openT(t, Config{DataDir: dir})
	t.Cleanup(func() { s.Close() })
	filler := filepath.Join(mnt, "filler")
	testfs.Fill(t, filler)
	n := uint64(0)
	for ; ; n++ {
		if _, err := s.Apply(benchLease(n)); err != nil {
			if !errors.Is(err, ErrDiskFull) || !errors.Is(err, ErrNotStored) {
				t.Fatalf("first failure: %v, want ErrDiskFull", err)
			}
			break
		}
		if n == 10000 {
			t.Fatal("10000 commands stored on a full tmpfs")
		}
	}
	applied, _, _ := s.State().Applied()
	for i := 0; i < 20; i++ {
		_, err := s.Apply(benchLease(n + 1 + uint64(i)))
		if !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "free space on the disk holding "+dir) {
			t.Fatalf("Apply %d with the disk full: %v, want ErrDiskFull naming %s", i, err, dir)
		}
	}
	if now, _, _ := s.State().Applied(); now != applied {
		t.Fatalf("applied index moved %d -> %d with the disk full", applied, now)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	k := n + 100
	netns.WaitFor(t, 30*time.Second, "an Apply after freeing space", func() bool {
		k++
		_, err := s.Apply(benchLease(k))
		return err == nil
	})
	if got, ok := s.State().Get(benchLease(k).Ops[0].Resource); !ok || got.DUID != benchLease(k).Ops[0].Binding.DUID {
		t.Fatalf("the command stored after recovery is not in the state")
	}
}
