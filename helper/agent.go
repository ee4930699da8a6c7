package main

// The node agent: serves the Docker API of the node's own socket over mutual TLS, so that a GPU
// server joins the platform with one command and dockerd is neither reconfigured nor restarted.
//
//	tianqi-helper agent join --platform URL --token T [--ca-sha256 HEX] [--listen :9376]
//	                         [--address A] [--state DIR] [--docker SOCKET]
//	tianqi-helper agent serve [--state DIR]
//
// join makes a key on the node (it never leaves it), sends a certificate request with the token,
// and keeps what the platform answers: its CA, the server certificate, and the fingerprint of the
// one client certificate it accepts. serve then answers only that client: a client of another CA,
// or of the same CA but not pinned (another node's), is refused in the handshake. The platform
// rotates the certificates and removes the node through /_tianqi/agent/ on the same connection.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const defaultAgentState = "/var/lib/tianqi-agent"

// agentState is state.json in the state directory; the key and certificates sit beside it.
type agentState struct {
	NodeID   string   `json:"nodeId"`
	Platform string   `json:"platform"`
	Listen   string   `json:"listen"`
	Docker   string   `json:"docker"`
	Clients  []string `json:"clients"`
	// Left: the platform removed the node; serve refuses to start until a new join.
	Left bool `json:"left,omitempty"`
}

func agent(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: tianqi-helper agent join --platform URL --token T [...] | agent serve [--state DIR]")
		return 2
	}
	switch args[0] {
	case "join":
		return agentJoin(args[1:])
	case "serve":
		return agentServe(args[1:])
	default:
		fmt.Fprintln(os.Stderr, "usage: tianqi-helper agent join|serve")
		return 2
	}
}

func agentFail(format string, a ...any) int {
	fmt.Fprintf(os.Stderr, "tianqi-agent: "+format+"\n", a...)
	return 1
}

// selfDigest names this build the way the platform names its builds: the binary's SHA-256, 16 hex digits.
func selfDigest() string {
	path, err := os.Executable()
	if err != nil {
		return "unknown"
	}
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "unknown"
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func newKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func newCSR(key *ecdsa.PrivateKey) (string, error) {
	host, _ := os.Hostname()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "tianqi-agent " + host}}, key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// writeFileAtomic writes through a temporary file and a rename: a crash leaves the old file or the new, never half of one.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func pingDocker(socket string) error {
	client := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	resp, err := client.Get("http://docker/_ping")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("it answered %s", resp.Status)
	}
	return nil
}

// localAddresses are the node's own unicast addresses: the server certificate names them, so the
// platform may reach the agent on any of them.
func localAddresses() []string {
	var out []string
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() {
			out = append(out, n.IP.String())
		}
	}
	return out
}

type joinAnswer struct {
	NodeID     string   `json:"nodeId"`
	CaCert     string   `json:"caCert"`
	ServerCert string   `json:"serverCert"`
	Clients    []string `json:"clients"`
	Port       int      `json:"port"`
	Address    string   `json:"address"`
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func agentJoin(args []string) int {
	fs := flag.NewFlagSet("agent join", flag.ContinueOnError)
	platform := fs.String("platform", "", "the platform's URL")
	token := fs.String("token", "", "the join token")
	caSum := fs.String("ca-sha256", "", "SHA-256 of the platform CA's certificate (DER), as the command gives it")
	listen := fs.String("listen", "", "address to serve on; default :<the node's agent port>")
	address := fs.String("address", "", "the address the platform reaches this node on; default: the address the join came from")
	state := fs.String("state", defaultAgentState, "state directory")
	docker := fs.String("docker", "/var/run/docker.sock", "the Docker socket")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *platform == "" || *token == "" {
		return agentFail("--platform and --token are required")
	}
	if err := pingDocker(*docker); err != nil {
		return agentFail("Docker does not answer on %s (%v): install and start Docker first", *docker, err)
	}
	if err := os.MkdirAll(*state, 0o700); err != nil {
		return agentFail("cannot make %s: %v", *state, err)
	}
	key, keyPEM, err := newKey()
	if err != nil {
		return agentFail("cannot make a key: %v", err)
	}
	csr, err := newCSR(key)
	if err != nil {
		return agentFail("cannot make a certificate request: %v", err)
	}
	host, _ := os.Hostname()
	body, _ := json.Marshal(map[string]any{
		"token": *token, "csr": csr, "hostname": host, "arch": runtime.GOARCH, "version": selfDigest(),
		"time": time.Now().UTC().Format(time.RFC3339Nano), "address": *address, "addresses": localAddresses(),
	})
	client := http.Client{Timeout: 30 * time.Second}
	resp, err := client.Post(strings.TrimRight(*platform, "/")+"/api/v1/join", "application/json", bytes.NewReader(body))
	if err != nil {
		return agentFail("cannot reach the platform at %s: %v", *platform, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != 200 {
		var e apiError
		if json.Unmarshal(raw, &e) == nil && e.Error.Message != "" {
			return agentFail("the platform refused the join (%s): %s", e.Error.Code, e.Error.Message)
		}
		return agentFail("the platform refused the join: %s", resp.Status)
	}
	var answer joinAnswer
	if err := json.Unmarshal(raw, &answer); err != nil || answer.CaCert == "" || answer.ServerCert == "" || len(answer.Clients) == 0 {
		return agentFail("the platform's answer is not a join answer")
	}
	caBlock, _ := pem.Decode([]byte(answer.CaCert))
	if caBlock == nil {
		return agentFail("the platform's CA certificate is not PEM")
	}
	if *caSum != "" {
		sum := sha256.Sum256(caBlock.Bytes)
		if !strings.EqualFold(hex.EncodeToString(sum[:]), *caSum) {
			return agentFail("the platform's CA is not the one the command names (SHA-256 %x, expected %s): not joining", sum, *caSum)
		}
	}
	if _, err := tls.X509KeyPair([]byte(answer.ServerCert), keyPEM); err != nil {
		return agentFail("the server certificate does not fit this node's key: %v", err)
	}
	if *listen == "" {
		*listen = fmt.Sprintf(":%d", answer.Port)
	}
	st := agentState{NodeID: answer.NodeID, Platform: *platform, Listen: *listen, Docker: *docker, Clients: answer.Clients}
	if err := saveAgent(*state, &st, keyPEM, []byte(answer.ServerCert), []byte(answer.CaCert)); err != nil {
		return agentFail("cannot keep the agent's state in %s: %v", *state, err)
	}
	fmt.Fprintf(os.Stderr, "tianqi-agent: joined as node %s; serving Docker on %s once started\n", answer.NodeID, *listen)
	return 0
}

func saveAgent(dir string, st *agentState, keyPEM, certPEM, caPEM []byte) error {
	if keyPEM != nil {
		if err := writeFileAtomic(filepath.Join(dir, "agent.key"), keyPEM, 0o600); err != nil {
			return err
		}
	}
	if certPEM != nil {
		if err := writeFileAtomic(filepath.Join(dir, "server.pem"), certPEM, 0o644); err != nil {
			return err
		}
	}
	if caPEM != nil {
		if err := writeFileAtomic(filepath.Join(dir, "ca.pem"), caPEM, 0o644); err != nil {
			return err
		}
	}
	data, _ := json.MarshalIndent(st, "", "  ")
	return writeFileAtomic(filepath.Join(dir, "state.json"), data, 0o600)
}

// trackedConn is an accepted TCP connection; the fingerprint of its client certificate is set
// in the handshake, so that connections of a client no longer accepted can be closed.
type trackedConn struct {
	net.Conn
	fingerprint atomic.Value
	server      *agentServer
	once        sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.server.conns.Delete(c) })
	return c.Conn.Close()
}

type trackingListener struct {
	net.Listener
	server *agentServer
}

func (l trackingListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: conn, server: l.server}
	l.server.conns.Store(tc, struct{}{})
	return tc, nil
}

type agentServer struct {
	dir     string
	mu      sync.Mutex // serialises changes to the state
	state   agentState
	cert    atomic.Pointer[tls.Certificate]
	clients atomic.Pointer[map[string]bool]
	caPool  *x509.CertPool
	caCert  *x509.Certificate
	conns   sync.Map
	pending *ecdsa.PrivateKey
	docker  *httputil.ReverseProxy
	done    chan struct{}
}

func fingerprintOf(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

func (s *agentServer) setClients(list []string) {
	m := make(map[string]bool, len(list))
	for _, f := range list {
		m[strings.ToLower(f)] = true
	}
	s.clients.Store(&m)
	// Connections of a client no longer accepted end now, hijacked streams included.
	s.conns.Range(func(k, _ any) bool {
		c := k.(*trackedConn)
		if fp, ok := c.fingerprint.Load().(string); ok && !m[fp] {
			c.Close()
		}
		return true
	})
}

func (s *agentServer) tlsConfig() *tls.Config {
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  s.caPool,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cert.Load(), nil
		},
	}
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		conn, _ := hello.Conn.(*trackedConn)
		cfg := base.Clone()
		cfg.GetConfigForClient = nil
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("no client certificate")
			}
			fp := fingerprintOf(raw[0])
			if !(*s.clients.Load())[fp] {
				return errors.New("this client certificate is not the platform's for this node")
			}
			if conn != nil {
				conn.fingerprint.Store(fp)
			}
			return nil
		}
		return cfg, nil
	}
	return base
}

func loadAgent(dir string) (*agentServer, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, fmt.Errorf("no joined agent in %s (run the join command from the node's page): %v", dir, err)
	}
	s := &agentServer{dir: dir, done: make(chan struct{})}
	if err := json.Unmarshal(raw, &s.state); err != nil {
		return nil, fmt.Errorf("%s/state.json is not readable: %v", dir, err)
	}
	if s.state.Left {
		return nil, fmt.Errorf("this node was removed from the platform; run a new join command to add it again")
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(caPEM)
	if block == nil {
		return nil, fmt.Errorf("%s/ca.pem is not PEM", dir)
	}
	s.caCert, err = x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	s.caPool = x509.NewCertPool()
	s.caPool.AddCert(s.caCert)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.pem"), filepath.Join(dir, "agent.key"))
	if err != nil {
		return nil, err
	}
	s.cert.Store(&cert)
	s.setClients(s.state.Clients)
	socket := s.state.Docker
	s.docker = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = "http"
			r.Out.URL.Host = "docker"
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", socket)
			},
			MaxIdleConnsPerHost: 16,
		},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			json.NewEncoder(w).Encode(map[string]string{"message": fmt.Sprintf("the TianQi node agent cannot reach Docker at %s: %v", socket, err)})
		},
	}
	return s, nil
}

func agentServe(args []string) int {
	fs := flag.NewFlagSet("agent serve", flag.ContinueOnError)
	dir := fs.String("state", defaultAgentState, "state directory")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	s, err := loadAgent(*dir)
	if err != nil {
		return agentFail("%v", err)
	}
	ln, err := net.Listen("tcp", s.state.Listen)
	if err != nil {
		return agentFail("cannot listen on %s: %v", s.state.Listen, err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second, ErrorLog: nil}
	fmt.Fprintf(os.Stderr, "tianqi-agent: node %s, Docker %s served on %s (mutual TLS)\n", s.state.NodeID, s.state.Docker, ln.Addr())
	go func() {
		<-s.done
		time.Sleep(200 * time.Millisecond) // the leave answer reaches the platform first
		srv.Close()
	}()
	err = srv.Serve(tls.NewListener(trackingListener{Listener: ln, server: s}, s.tlsConfig()))
	if errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "tianqi-agent: the platform removed this node; the agent stops")
		return 0
	}
	return agentFail("%v", err)
}

var hijacked = regexp.MustCompile(`^(/v[0-9.]+)?/(exec/[^/]+/start|containers/[^/]+/attach)$`)

func (s *agentServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_tianqi/agent/") {
		s.control(w, r)
		return
	}
	if r.Header.Get("Upgrade") != "" || hijacked.MatchString(r.URL.Path) {
		s.splice(w, r)
		return
	}
	s.docker.ServeHTTP(w, r)
}

// splice hands a hijacked stream (exec, attach) to Docker byte for byte, ends included: the
// client's end of input reaches Docker as a half-close, and the output goes on until Docker ends it.
func (s *agentServer) splice(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "cannot read the request", http.StatusBadRequest)
		return
	}
	backend, err := net.DialTimeout("unix", s.state.Docker, 10*time.Second)
	if err != nil {
		s.docker.ErrorHandler(w, r, err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		backend.Close()
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	client, buffered, err := hj.Hijack()
	if err != nil {
		backend.Close()
		return
	}
	defer client.Close()
	defer backend.Close()
	out := r.Clone(context.Background())
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.ContentLength = int64(len(body))
	out.Header.Del("Content-Length")
	out.TransferEncoding = nil
	out.RequestURI = ""
	out.URL = &url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if err := out.Write(backend); err != nil {
		return
	}
	toDocker := make(chan struct{})
	go func() {
		defer close(toDocker)
		// What the client sent after the request (stdin) was read ahead into the buffer.
		if n := buffered.Reader.Buffered(); n > 0 {
			data, _ := buffered.Reader.Peek(n)
			if _, err := backend.Write(data); err != nil {
				return
			}
		}
		io.Copy(backend, client)
		if uc, ok := backend.(*net.UnixConn); ok {
			uc.CloseWrite()
		}
	}()
	io.Copy(client, bufio.NewReaderSize(backend, 256*1024))
	if tc, ok := client.(*tls.Conn); ok {
		tc.CloseWrite()
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// control answers the platform's own requests: who the agent is, new certificates, leaving.
func (s *agentServer) control(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/_tianqi/agent/info":
		host, _ := os.Hostname()
		writeJSON(w, 200, map[string]any{"nodeId": s.state.NodeID, "version": selfDigest(), "hostname": host, "arch": runtime.GOARCH, "clients": len(*s.clients.Load())})
	case r.Method == http.MethodPost && r.URL.Path == "/_tianqi/agent/csr":
		key, _, err := newKey()
		if err == nil {
			var csr string
			csr, err = newCSR(key)
			if err == nil {
				s.mu.Lock()
				s.pending = key
				s.mu.Unlock()
				writeJSON(w, 200, map[string]string{"csr": csr})
				return
			}
		}
		writeJSON(w, 500, map[string]string{"message": err.Error()})
	case r.Method == http.MethodPut && r.URL.Path == "/_tianqi/agent/tls":
		s.putTLS(w, r)
	case r.Method == http.MethodPost && r.URL.Path == "/_tianqi/agent/leave":
		s.mu.Lock()
		s.state.Left = true
		s.state.Clients = nil
		err := saveAgent(s.dir, &s.state, nil, nil, nil)
		s.mu.Unlock()
		if err != nil {
			writeJSON(w, 500, map[string]string{"message": err.Error()})
			return
		}
		writeJSON(w, 200, map[string]bool{"left": true})
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		s.setClients(nil)
		close(s.done)
	default:
		writeJSON(w, 404, map[string]string{"message": "no such agent operation"})
	}
}

// putTLS takes a new server certificate (for the key of the last /csr) and the client
// certificates to accept from now on; both are kept on disk before the answer.
func (s *agentServer) putTLS(w http.ResponseWriter, r *http.Request) {
	var in struct {
		ServerCert string   `json:"serverCert"`
		Clients    []string `json:"clients"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil || len(in.Clients) == 0 {
		writeJSON(w, 400, map[string]string{"message": "send {serverCert?, clients: [sha256…]}"})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var keyPEM, certPEM []byte
	if in.ServerCert != "" {
		if s.pending == nil {
			writeJSON(w, 409, map[string]string{"message": "no certificate request is pending: POST /_tianqi/agent/csr first"})
			return
		}
		der, _ := x509.MarshalPKCS8PrivateKey(s.pending)
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		cert, err := tls.X509KeyPair([]byte(in.ServerCert), keyPEM)
		if err != nil {
			writeJSON(w, 400, map[string]string{"message": "the certificate does not fit the pending key: " + err.Error()})
			return
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err == nil {
			_, err = leaf.Verify(x509.VerifyOptions{Roots: s.caPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		}
		if err != nil {
			writeJSON(w, 400, map[string]string{"message": "the certificate is not the platform CA's: " + err.Error()})
			return
		}
		certPEM = []byte(in.ServerCert)
		defer func() { s.cert.Store(&cert); s.pending = nil }()
	}
	next := s.state
	next.Clients = in.Clients
	if err := saveAgent(s.dir, &next, keyPEM, certPEM, nil); err != nil {
		writeJSON(w, 500, map[string]string{"message": err.Error()})
		return
	}
	s.state = next
	writeJSON(w, 200, map[string]int{"clients": len(in.Clients)})
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	s.setClients(in.Clients)
}
