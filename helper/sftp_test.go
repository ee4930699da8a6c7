package main

import (
	"io"
	"net"
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

func TestAcceptWithTokenTakesOnlyTheTokenAndKeepsWhatFollows(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	token := "00112233445566778899aabbccddeeff"
	got := make(chan net.Conn, 1)
	go func() { got <- acceptWithToken(ln, token, time.Now().Add(5*time.Second)) }()

	// a wrong token, then a line too long, then a connection that says nothing: each closed
	for _, first := range []string{"ffffffffffffffffffffffffffffffff\n", token + "00\n", ""} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if first != "" {
			_, _ = c.Write([]byte(first))
			buf := make([]byte, 1)
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(buf); err == nil {
				t.Fatalf("%q: the connection should be closed", first)
			}
		}
		c.Close()
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte(token + "\nSFTP bytes"))
	conn := <-got
	if conn == nil {
		t.Fatal("the connection with the token was not taken")
	}
	defer conn.Close()
	rest := make([]byte, len("SFTP bytes"))
	if _, err := io.ReadFull(conn, rest); err != nil || string(rest) != "SFTP bytes" {
		t.Fatalf("what follows the token line should reach the server: %q %v", rest, err)
	}
}

func TestAcceptWithTokenGivesUpAtTheDeadline(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if conn := acceptWithToken(ln, "token", time.Now().Add(100*time.Millisecond)); conn != nil {
		t.Fatal("no connection came: nil expected")
	}
}
