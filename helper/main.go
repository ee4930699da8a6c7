// Command tianqi-helper is what the platform copies into an instance's container to serve the
// jump host's file transfer and port forwarding there, whatever the image holds: it is static,
// needs no shell, no libc and no sftp-server, and runs with the container's own view of the
// filesystem and network (so nothing outside the container is reachable through it). On each
// node it also runs as the node guard, which keeps tenant containers off the node's own ports.
//
//	tianqi-helper sftp [start-dir]   SFTP version 3 on stdin/stdout
//	tianqi-helper sftp --listen [start-dir]
//	                                 SFTP on one TCP connection to the container's address, which must
//	                                 send the token first; stdout says "listen <port> <token>"
//	tianqi-helper connect HOST PORT  a TCP connection on stdin/stdout; first line on stdout "ok" or "error <why>"
//	tianqi-helper which NAME         the path of NAME on $PATH, exit 1 when there is none
//	tianqi-helper guard [--once] [--no-firewall] [--allow CIDR,…] [--preload LIB] | guard --remove
//	                                 the node guard: tenant bridges may not reach the node (nftables),
//	                                 and /vgpu/ld.so.preload names LIB for vGPU containers
//	tianqi-helper agent join --platform URL --token T … | agent serve [--state DIR]
//	                                 the node agent: the node's Docker socket over mutual TLS (agent.go)
//	tianqi-helper statfs PATH         "<total bytes> <free bytes>" of the filesystem holding PATH
//	tianqi-helper version
package main

import (
	"fmt"
	"os"
)

// version is set by the build (-ldflags -X main.version=…); the platform compares it.
var version = "dev"

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "sftp":
		args := os.Args[2:]
		listen := len(args) > 0 && args[0] == "--listen"
		if listen {
			args = args[1:]
		}
		start := ""
		if len(args) > 0 {
			start = args[0]
		}
		if listen {
			os.Exit(serveSFTPListening(start))
		}
		os.Exit(serveSFTP(start))
	case "connect":
		if len(os.Args) != 4 {
			usage()
		}
		os.Exit(connect(os.Args[2], os.Args[3]))
	case "which":
		if len(os.Args) != 3 {
			usage()
		}
		os.Exit(which(os.Args[2]))
	case "guard":
		os.Exit(guard(os.Args[2:]))
	case "agent":
		os.Exit(agent(os.Args[2:]))
	case "statfs":
		if len(os.Args) != 3 {
			usage()
		}
		os.Exit(statfs(os.Args[2]))
	case "version":
		fmt.Println(version)
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: tianqi-helper sftp [--listen] [start-dir] | connect HOST PORT | which NAME | guard [--once] [--no-firewall] [--allow CIDR,…] [--preload LIB] | guard --remove | agent join|serve … | statfs PATH | version")
	os.Exit(2)
}
