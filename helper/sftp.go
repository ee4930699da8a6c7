package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
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
	if start == "" {
		start = os.Getenv("HOME")
	}
	if info, err := os.Stat(start); start == "" || err != nil || !info.IsDir() {
		start = "/"
	}
	h := &fsHandler{start: start}
	server := sftp.NewRequestServer(stdio{}, sftp.Handlers{FileGet: h, FilePut: h, FileCmd: h, FileList: h},
		sftp.WithStartDirectory(start), sftp.WithRSMaxTxPacket(256*1024))
	err := server.Serve()
	_ = server.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintln(os.Stderr, "sftp:", err)
		return 1
	}
	return 0
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
// the same directory and renamed onto its name when closed, so an upload that fails (a full
// disk) leaves the old file, or none, under that name. Writes into an existing file without
// truncation (a resumed upload, `reput`) go to the file itself; a failed one cuts the file back
// to the size it had. A client that goes away mid-upload keeps what arrived, as with OpenSSH,
// so that it can resume.
type upload struct {
	mu       sync.Mutex
	file     *os.File
	target   string
	temp     string // "" when writing in place
	origSize int64
	failed   error
	done     bool
}

func openUpload(r *sftp.Request) (*upload, error) {
	flags := r.Pflags()
	// The request server keeps no attributes of an open (r.Flags holds the open flags there):
	// new files get 0644 less the umask, as with OpenSSH's sftp-server before `put -p`.
	mode := os.FileMode(0o644)
	info, statErr := os.Stat(r.Filepath)
	exists := statErr == nil
	if exists && info.IsDir() {
		return nil, &os.PathError{Op: "open", Path: r.Filepath, Err: syscall.EISDIR}
	}
	if !exists && !flags.Creat {
		return nil, os.ErrNotExist
	}
	if exists && flags.Excl && flags.Creat {
		return nil, os.ErrExist
	}
	open := os.O_WRONLY
	if flags.Read {
		open = os.O_RDWR
	}
	if !exists || flags.Trunc {
		dir, base := filepath.Split(r.Filepath)
		temp := filepath.Join(dir, "."+base+".tianqi-upload-"+strconv.FormatInt(time.Now().UnixNano(), 36))
		file, err := os.OpenFile(temp, open|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return nil, err
		}
		if exists {
			// Keep the mode of the file being replaced, as an in-place write would.
			_ = file.Chmod(info.Mode().Perm())
		}
		return &upload{file: file, target: r.Filepath, temp: temp}, nil
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

// TransferError: the client went away with the file open. What arrived stays for a resume.
func (u *upload) TransferError(error) {}

func (u *upload) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return nil
	}
	u.done = true
	closeErr := u.file.Close()
	if u.failed != nil {
		return u.failed
	}
	if closeErr != nil {
		u.failed = closeErr
		u.rollBack()
		return closeErr
	}
	if u.temp != "" {
		if err := os.Rename(u.temp, u.target); err != nil {
			_ = os.Remove(u.temp)
			return err
		}
	}
	return nil
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
