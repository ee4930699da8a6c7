package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSweepStaleRemovesOnlyOldUploadFiles(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	write := func(name string, age time.Duration) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		at := now.Add(-age)
		if err := os.Chtimes(path, at, at); err != nil {
			t.Fatal(err)
		}
		return path
	}
	stale := write(uploadPrefix+"aaaaaaaaaaaa", staleUploadAge+time.Minute)
	fresh := write(uploadPrefix+"bbbbbbbbbbbb", time.Hour)
	oldOther := write("model.pt", 30*24*time.Hour)
	oldDot := write(".bashrc", 30*24*time.Hour)
	alike := write(uploadPrefix+"notes", 30*24*time.Hour)

	sweepStale(dir, now)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("a hidden upload file older than %s should be gone: %v", staleUploadAge, err)
	}
	for _, kept := range []string{fresh, oldOther, oldDot, alike} {
		if _, err := os.Stat(kept); err != nil {
			t.Fatalf("%s should be kept: %v", kept, err)
		}
	}

	// Once per directory per process: a later stale file waits for the next helper.
	later := write(uploadPrefix+"cccccccccccc", staleUploadAge+time.Hour)
	sweepStale(dir, now)
	if _, err := os.Stat(later); err != nil {
		t.Fatalf("a second sweep of the same directory should not run: %v", err)
	}
}
