package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// errNotRegular: the target exists and is a device or a pipe, which a file
// renamed over it would replace.
var errNotRegular = errors.New("not a regular file")

// atomicFile is an output written to path+".tmp" and renamed to path only
// when it is complete and fsynced, so a failed command leaves path as it
// was. One goroutine uses it.
type atomicFile struct {
	*os.File
	path string
}

// createAtomic starts an atomicFile for path. An existing directory or
// non-regular file at path is refused (errNotRegular for the latter).
func createAtomic(path string) (*atomicFile, error) {
	if fi, err := os.Stat(path); err == nil {
		switch {
		case fi.IsDir():
			return nil, fmt.Errorf("%s is a directory: give a file name", path)
		case !fi.Mode().IsRegular():
			return nil, fmt.Errorf("%s: %w (a device or a pipe)", path, errNotRegular)
		}
	}
	f, err := os.OpenFile(path+".tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cannot write %s.tmp: %w: check that the directory exists and is writable", path, err)
	}
	return &atomicFile{File: f, path: path}, nil
}

// tmpName is where the data is until commit.
func (a *atomicFile) tmpName() string { return a.path + ".tmp" }

// sync fsyncs and closes the temporary file (after which it may be read
// back and checked before commit).
func (a *atomicFile) sync() error {
	if err := a.File.Sync(); err != nil {
		a.File.Close()
		return fmt.Errorf("fsync %s: %w: is the disk full?", a.tmpName(), err)
	}
	if err := a.File.Close(); err != nil {
		return fmt.Errorf("close %s: %w", a.tmpName(), err)
	}
	return nil
}

// commit renames the synced temporary file to path and fsyncs the
// directory.
func (a *atomicFile) commit() error {
	if err := os.Rename(a.tmpName(), a.path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", a.tmpName(), a.path, err)
	}
	if d, err := os.Open(filepath.Dir(a.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// abort removes the temporary file (a no-op after commit).
func (a *atomicFile) abort() {
	a.File.Close()
	os.Remove(a.tmpName())
}
