package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"time"
)

// connect dials HOST:PORT from inside the container and joins the connection to stdin/stdout.
// Its first line on stdout, before any byte of the service, is "ok" once connected, or "error "
// and the reason it could not connect (exit 1), so that the jump host can accept or refuse the
// SSH channel before any byte flows; on stdout, not stderr, because the engine relays the two
// separately and a service that speaks first would overtake a line on stderr. The client's end
// of input half-closes the connection; the service's end of output ends the process.
func connect(host, port string) int {
	ip, err := ownAddress(host)
	if err != nil {
		fmt.Fprintln(os.Stdout, "error", err)
		return 1
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip.String(), port), 10*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stdout, "error", reason(err))
		return 1
	}
	fmt.Fprintln(os.Stdout, "ok")
	tcp := conn.(*net.TCPConn)
	go func() {
		_, _ = io.CopyBuffer(tcp, os.Stdin, make([]byte, copyBuffer))
		_ = tcp.CloseWrite()
	}()
	// Large reads: fewer frames on the engine's exec stream for a bulk transfer.
	_, err = io.CopyBuffer(os.Stdout, tcp, make([]byte, copyBuffer))
	_ = tcp.Close()
	if err != nil {
		return 1
	}
	return 0
}

// copyBuffer is the size of one read of a forwarded connection.
const copyBuffer = 256 * 1024

// ownAddress resolves host as the container does and returns it only when it is the container's
// own: a loopback address, or an address of one of its interfaces. A forward reaches the
// instance's own services, never the node, other containers or anything beyond.
func ownAddress(host string) (net.IP, error) {
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return nil, fmt.Errorf("unknown host %s", host)
	}
	local, _ := net.InterfaceAddrs()
	for _, ip := range ips {
		if ip.IsLoopback() || ip.IsUnspecified() {
			return ip, nil
		}
		for _, addr := range local {
			if network, ok := addr.(*net.IPNet); ok && network.IP.Equal(ip) {
				return ip, nil
			}
		}
	}
	return nil, fmt.Errorf("%s is not an address of this instance", host)
}

// reason is the dial error without Go's "dial tcp 127.0.0.1:8888: connect:" prefix.
func reason(err error) string {
	if op, ok := err.(*net.OpError); ok && op.Err != nil {
		if sys, ok := op.Err.(*os.SyscallError); ok {
			return sys.Err.Error()
		}
		return op.Err.Error()
	}
	return err.Error()
}

func which(name string) int {
	path, err := exec.LookPath(name)
	if err != nil {
		return 1
	}
	fmt.Println(path)
	return 0
}
