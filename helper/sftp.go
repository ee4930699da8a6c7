package main

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pkg/sftp"
)

// stdio is the SFTP connection: requests on stdin, answers on stdout.
type stdio struct{}

func (stdio) Read(p []byte) (int, error)  { return os.Stdin.Read(p) }
func (stdio) Write(p []byte) (int, error) { return os.Stdout.Write(p) }
func (stdio) Close() error                { return os.Stdout.Close() }

func serveSFTP(start string) int {
	return serveSFTPOn(stdio{}, start)
}

// serveSFTPOn serves SFTP version 3 on one connection until it ends.
func serveSFTPOn(conn io.ReadWriteCloser, start string) int {
	if start == "" {
		start = os.Getenv("HOME")
	}
	if info, err := os.Stat(start); start == "" || err != nil || !info.IsDir() {
		start = "/"
	}
	h := &fsHandler{start: start}
	server := sftp.NewRequestServer(conn, sftp.Handlers{FileGet: h, FilePut: h, FileCmd: h, FileList: h},
		sftp.WithStartDirectory(start), sftp.WithRSMaxTxPacket(256*1024))
	err := server.Serve()
	_ = server.Close()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		fmt.Fprintln(os.Stderr, "sftp:", err)
		return 1
	}
	return 0
}

// listenWait is how long a listening SFTP server waits for the platform's connection and its token.
const listenWait = 15 * time.Second

// serveSFTPListening serves SFTP over one TCP connection that the platform makes to the
// container's own address, where it can (a node whose engine is the platform host's own): the
// bytes then skip the engine's exec stream, which costs more CPU per MB than the rest of the way.
// It listens on a free port of the container's addresses, says "listen <port> <token>" on
// stdout (which only the platform reads), serves the first connection that sends the token as
// its first line within listenWait, and listens no more. Stdin closing (the platform ending the
// exec) ends the session as a dropped connection does: an upload in progress commits nothing.
func serveSFTPListening(start string) int {
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "sftp:", err)
		return 1
	}
	var random [16]byte
	if _, err := rand.Read(random[:]); err != nil {
		fmt.Fprintln(os.Stderr, "sftp:", err)
		return 1
	}
	token := hex.EncodeToString(random[:])
	fmt.Printf("listen %d %s\n", ln.Addr().(*net.TCPAddr).Port, token)
	conn := acceptWithToken(ln.(*net.TCPListener), token, time.Now().Add(listenWait))
	_ = ln.Close()
	if conn == nil {
		fmt.Fprintln(os.Stderr, "sftp: no connection with the token came")
		return 1
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		_ = conn.Close()
	}()
	return serveSFTPOn(conn, start)
}

// acceptWithToken is the first connection before the deadline whose first line is the token; the
// others are closed. The line is read a byte at a time: what follows it is the SFTP session's.
func acceptWithToken(ln *net.TCPListener, token string, deadline time.Time) net.Conn {
	_ = ln.SetDeadline(deadline)
	for {
		conn, err := ln.Accept()
		if err != nil {
			return nil
		}
		_ = conn.SetReadDeadline(deadline)
		line := make([]byte, 0, len(token)+1)
		one := make([]byte, 1)
		for len(line) <= len(token) {
			if _, err := io.ReadFull(conn, one); err != nil || one[0] == '\n' {
				break
			}
			line = append(line, one[0])
		}
		if subtle.ConstantTimeCompare(line, []byte(token)) == 1 && one[0] == '\n' {
			_ = conn.SetReadDeadline(time.Time{})
			return conn
		}
		_ = conn.Close()
	}
}

// fsHandler serves the container's own filesystem, as its default user sees it.
type fsHandler struct {
	start string // where relative paths start
}

func (fsHandler) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	return os.Open(r.Filepath)
}

func (fsHandler) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	return openUpload(r)
}

func (fsHandler) OpenFile(r *sftp.Request) (sftp.WriterAtReaderAt, error) {
	return openUpload(r)
}

// upload is a file opened for writing. A new or truncated file is written to a hidden file in
// the same directory and renamed onto its name only when the client closes it: an upload that
// fails (a full disk) or is cut off (the client killed, the connection dropped, the platform
// ending the session) leaves the old file, or none, under that name, and its hidden file goes.
// Writes into an existing file without truncation (a resumed upload, `reput`) go to the file
// itself; a failed one cuts the file back to the size it had, an interrupted one keeps what
// arrived so that it can be resumed again. Attributes set on the open handle (`put -p`, scp's
// modes and times) go to the hidden file, so they arrive with it.
type upload struct {
	mu          sync.Mutex
	file        *os.File
	target      string
	temp        string // "" when writing in place
	origSize    int64
	failed      error
	interrupted bool
	done        bool
}

// uploads are the hidden files being written, by the name they will take: fsetstat on the open
// handle (the request server gives the target's name) applies to them.
var uploads = struct {
	sync.Mutex
	byTarget map[string]*upload
}{byTarget: map[string]*upload{}}

// uploadPrefix names the hidden files of uploads in progress.
const uploadPrefix = ".tianqi-upload-"

// staleUploadAge is how old a hidden upload file must be before it counts as left behind: an
// upload whose helper was killed outright (the container stopped, the node lost power) cannot
// remove its own. Any upload going on writes to its file far more often than that.
const staleUploadAge = 24 * time.Hour

// swept are the directories this helper has already cleared of stale upload files.
var swept sync.Map

// sweepStale removes hidden upload files older than staleUploadAge from dir, once per helper
// process per directory: the first upload into a directory tidies what an earlier one left.
func sweepStale(dir string, now time.Time) {
	if _, done := swept.LoadOrStore(dir, true); done {
		return
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, entry := range entries {
		if !isUploadName(entry.Name()) || !entry.Type().IsRegular() {
			continue
		}
		info, err := entry.Info()
		if err == nil && now.Sub(info.ModTime()) > staleUploadAge {
			_ = os.Remove(filepath.Join(dir, entry.Name()))
		}
	}
}

// isUploadName: a name tempName makes (the prefix and 12 hex digits), not a user's file that happens to start alike.
func isUploadName(name string) bool {
	suffix, ok := strings.CutPrefix(name, uploadPrefix)
	if !ok || len(suffix) != 12 {
		return false
	}
	_, err := hex.DecodeString(suffix)
	return err == nil
}

// tempName is short whatever the target's length: a legal 255-byte name must stay uploadable.
func tempName(dir string) string {
	var random [6]byte
	_, _ = rand.Read(random[:])
	return filepath.Join(dir, uploadPrefix+hex.EncodeToString(random[:]))
}

// openMode is the permission an OPEN asks for. The request server keeps the open's attribute
// bytes but not their flags: OpenSSH's sftp and scp, WinSCP and ssh2 send permissions alone (4
// bytes) or with times (`-p`: 12 bytes, permissions first); anything else keeps 0644.
func openMode(r *sftp.Request) os.FileMode {
	attrs := r.Attrs
	if len(attrs) == 4 || len(attrs) == 12 {
		perm := uint32(attrs[0])<<24 | uint32(attrs[1])<<16 | uint32(attrs[2])<<8 | uint32(attrs[3])
		return os.FileMode(perm & 0o777)
	}
	return 0o644
}

func openUpload(r *sftp.Request) (*upload, error) {
	flags := r.Pflags()
	// Permissions as asked (the umask applies, as with OpenSSH's sftp-server).
	mode := openMode(r)
	info, statErr := os.Stat(r.Filepath)
	exists := statErr == nil
	if exists && info.IsDir() {
		return nil, &os.PathError{Op: "open", Path: r.Filepath, Err: syscall.EISDIR}
	}
	if !exists && !flags.Creat {
		return nil, os.ErrNotExist
	}
	// The name itself must be one the file system takes: the hidden file's name would not tell.
	if base := filepath.Base(r.Filepath); strings.ContainsRune(r.Filepath, 0) {
		return nil, &os.PathError{Op: "open", Path: r.Filepath, Err: syscall.EINVAL}
	} else if len(base) > 255 {
		return nil, &os.PathError{Op: "open", Path: r.Filepath, Err: syscall.ENAMETOOLONG}
	}
	if exists && flags.Excl && flags.Creat {
		return nil, os.ErrExist
	}
	open := os.O_WRONLY
	if flags.Read {
		open = os.O_RDWR
	}
	if !exists || flags.Trunc {
		sweepStale(filepath.Dir(r.Filepath), time.Now())
		temp := tempName(filepath.Dir(r.Filepath))
		file, err := os.OpenFile(temp, open|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			// The client hears of its own file, not of the hidden one.
			return nil, &os.PathError{Op: "open", Path: r.Filepath, Err: errors.Unwrap(err)}
		}
		if exists {
			// Keep the mode of the file being replaced, as an in-place write would.
			_ = file.Chmod(info.Mode().Perm())
		}
		u := &upload{file: file, target: r.Filepath, temp: temp}
		uploads.Lock()
		uploads.byTarget[r.Filepath] = u
		uploads.Unlock()
		return u, nil
	}
	file, err := os.OpenFile(r.Filepath, open, mode)
	if err != nil {
		return nil, err
	}
	return &upload{file: file, target: r.Filepath, origSize: info.Size()}, nil
}

func (u *upload) WriteAt(p []byte, off int64) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.failed != nil {
		return 0, u.failed
	}
	n, err := u.file.WriteAt(p, off)
	if err != nil {
		u.failed = err
		u.rollBack()
	}
	return n, err
}

func (u *upload) ReadAt(p []byte, off int64) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.file.ReadAt(p, off)
}

// rollBack undoes a failed upload: the hidden file goes, an in-place file gets its old size.
func (u *upload) rollBack() {
	if u.temp != "" {
		_ = os.Remove(u.temp)
		return
	}
	_ = u.file.Truncate(u.origSize)
}

// TransferError: the connection ended with the file open (the client killed or gone, the session
// ended by the platform). Close then commits nothing.
func (u *upload) TransferError(error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.interrupted = true
}

func (u *upload) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return nil
	}
	u.done = true
	if u.temp != "" {
		uploads.Lock()
		if uploads.byTarget[u.target] == u {
			delete(uploads.byTarget, u.target)
		}
		uploads.Unlock()
	}
	closeErr := u.file.Close()
	if u.failed != nil {
		return u.failed
	}
	if u.interrupted {
		// Only the client's CLOSE commits a new or replaced file.
		if u.temp != "" {
			_ = os.Remove(u.temp)
		}
		return nil
	}
	if closeErr != nil {
		u.failed = closeErr
		u.rollBack()
		return closeErr
	}
	if u.temp != "" {
		if err := os.Rename(u.temp, u.target); err != nil {
			_ = os.Remove(u.temp)
			return &os.LinkError{Op: "rename", Old: u.target, New: u.target, Err: errors.Unwrap(err)}
		}
	}
	return nil
}

// openUploadOf is the upload now open for `path` (writing to its hidden file), or nil.
func openUploadOf(path string) *upload {
	uploads.Lock()
	defer uploads.Unlock()
	return uploads.byTarget[path]
}

func (fsHandler) Filecmd(r *sftp.Request) error {
	switch r.Method {
	case "Setstat":
		return setstat(r)
	case "Rename":
		// SFTP v3 rename does not replace an existing target (OpenSSH's sftp-server neither).
		if _, err := os.Lstat(r.Target); err == nil {
			return os.ErrExist
		}
		return os.Rename(r.Filepath, r.Target)
	case "Rmdir":
		return syscall.Rmdir(r.Filepath)
	case "Remove":
		return syscall.Unlink(r.Filepath)
	case "Mkdir":
		mode := os.FileMode(0o755)
		if r.AttrFlags().Permissions {
			mode = r.Attributes().FileMode().Perm()
		}
		return os.Mkdir(r.Filepath, mode)
	case "Link":
		return os.Link(r.Filepath, r.Target)
	case "Symlink":
		// The request server gives the link's target as Filepath, the new link's name as Target.
		return os.Symlink(r.Filepath, r.Target)
	}
	return sftp.ErrSSHFxOpUnsupported
}

func (fsHandler) PosixRename(r *sftp.Request) error {
	return os.Rename(r.Filepath, r.Target)
}

func (fsHandler) StatVFS(r *sftp.Request) (*sftp.StatVFS, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(r.Filepath, &st); err != nil {
		return nil, err
	}
	return &sftp.StatVFS{
		Bsize: uint64(st.Bsize), Frsize: uint64(st.Frsize), Blocks: st.Blocks, Bfree: st.Bfree,
		Bavail: st.Bavail, Files: st.Files, Ffree: st.Ffree, Favail: st.Ffree, Namemax: uint64(st.Namelen),
	}, nil
}

func setstat(r *sftp.Request) error {
	flags := r.AttrFlags()
	attrs := r.Attributes()
	// fsetstat on a file being uploaded (scp, put -p): its hidden file, which becomes the file.
	if u := openUploadOf(r.Filepath); u != nil {
		return u.setstat(flags, attrs)
	}
	if flags.Size {
		if err := os.Truncate(r.Filepath, int64(attrs.Size)); err != nil {
			return err
		}
	}
	if flags.Permissions {
		if err := os.Chmod(r.Filepath, attrs.FileMode().Perm()|attrs.FileMode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky)); err != nil {
			return err
		}
	}
	if flags.UidGid {
		if err := os.Chown(r.Filepath, int(attrs.UID), int(attrs.GID)); err != nil {
			return err
		}
	}
	if flags.Acmodtime {
		if err := os.Chtimes(r.Filepath, time.Unix(int64(attrs.Atime), 0), time.Unix(int64(attrs.Mtime), 0)); err != nil {
			return err
		}
	}
	return nil
}

func (fsHandler) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	switch r.Method {
	case "List":
		dir, err := os.Open(r.Filepath)
		if err != nil {
			return nil, err
		}
		return &dirLister{dir: dir}, nil
	case "Stat":
		info, err := os.Stat(r.Filepath)
		if err != nil {
			return nil, err
		}
		return fileList{info}, nil
	}
	return nil, sftp.ErrSSHFxOpUnsupported
}

func (fsHandler) Lstat(r *sftp.Request) (sftp.ListerAt, error) {
	info, err := os.Lstat(r.Filepath)
	if err != nil {
		return nil, err
	}
	return fileList{info}, nil
}

func (fsHandler) Readlink(path string) (string, error) {
	return os.Readlink(path)
}

func (h fsHandler) RealPath(path string) (string, error) {
	// As OpenSSH: the absolute path, cleaned (so `..` above / stays at /), symlinks resolved where they exist.
	if !filepath.IsAbs(path) {
		path = filepath.Join(h.start, path)
	}
	path = filepath.Clean(path)
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		return resolved, nil
	}
	return path, nil
}

type fileList []os.FileInfo

func (l fileList) ListAt(out []os.FileInfo, offset int64) (int, error) {
	if offset >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(out, l[offset:])
	if n < len(out) {
		return n, io.EOF
	}
	return n, nil
}

// dirLister reads a directory in pages, so a directory of a million files is never held whole.
type dirLister struct {
	mu   sync.Mutex
	dir  *os.File
	next int64
}

func (d *dirLister) ListAt(out []os.FileInfo, offset int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if offset != d.next {
		return 0, errors.New("directory read out of order")
	}
	entries, err := d.dir.Readdir(len(out))
	n := copy(out, entries)
	d.next += int64(n)
	if err != nil {
		return n, io.EOF
	}
	return n, nil
}

func (d *dirLister) Close() error { return d.dir.Close() }

// setstat applies attributes to the hidden file of an open upload.
func (u *upload) setstat(flags sftp.FileAttrFlags, attrs *sftp.FileStat) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return os.ErrClosed
	}
	if flags.Size {
		if err := u.file.Truncate(int64(attrs.Size)); err != nil {
			return err
		}
	}
	if flags.Permissions {
		if err := u.file.Chmod(attrs.FileMode().Perm() | attrs.FileMode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky)); err != nil {
			return err
		}
	}
	if flags.UidGid {
		if err := u.file.Chown(int(attrs.UID), int(attrs.GID)); err != nil {
			return err
		}
	}
	if flags.Acmodtime {
		if err := os.Chtimes(u.temp, time.Unix(int64(attrs.Atime), 0), time.Unix(int64(attrs.Mtime), 0)); err != nil {
			return err
		}
	}
	return nil
}
