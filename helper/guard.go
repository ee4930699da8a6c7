package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// tenantPrefix starts the name of every tenant bridge the platform creates (tqn + 12 hex).
const tenantPrefix = "tqn"

// tableName is the guard's own nftables table; nothing else of the host's firewall is touched.
// (A variable only so that the tests can use a table of their own.)
var tableName = "tianqi"

// guard keeps the node's firewall closed to tenant containers: packets that arrive from a tenant
// bridge addressed to the node itself (any of its addresses: the Docker API port, sshd, the
// platform if it runs there) are dropped, except answers to connections the node opened and DNS.
// Traffic a tenant sends through the node is dropped too when it is addressed to a private,
// shared (CGNAT), link-local (cloud metadata), loopback, multicast or reserved range, or to a
// subnet the node itself is on: other GPU nodes, the control plane's databases, BMCs, NFS. The
// tenant's own bridge stays open to itself, answers to connections from outside stay open, and
// what the admin allows (--allow CIDR,…: a NAS, a package mirror) is let through; the internet is
// not touched. It runs as the node guard container (host network, CAP_NET_ADMIN, restart always)
// and applies the rules again every 30 s, so a firewall reload on the node (or a new address on
// it) cannot leave them off or stale for long.
func guard(args []string) int {
	once, firewall, preload := false, true, ""
	var allow []*net.IPNet
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--once":
			once = true
		case "--remove":
			// Taking a node out of the platform: the guard's rules go with it.
			if err := removeRules(); err != nil {
				fmt.Fprintln(os.Stderr, "guard:", err)
				return 1
			}
			fmt.Fprintln(os.Stderr, "guard: rules removed; tenant bridges are no longer filtered")
			return 0
		case "--no-firewall":
			firewall = false
		case "--preload":
			if i+1 < len(args) {
				preload = args[i+1]
				i++
			}
		case "--allow":
			if i+1 < len(args) {
				nets, err := parseCIDRs(args[i+1])
				if err != nil {
					fmt.Fprintln(os.Stderr, "guard:", err)
					return 2
				}
				allow = append(allow, nets...)
				i++
			}
		}
	}
	apply := func() error {
		if preload != "" {
			if err := writePreload(preload); err != nil {
				return err
			}
		}
		if firewall {
			return applyRules(allow)
		}
		return nil
	}
	if err := apply(); err != nil {
		fmt.Fprintln(os.Stderr, "guard:", err)
		return 1
	}
	if firewall {
		fmt.Fprintln(os.Stderr, "guard: tenant bridges", tenantPrefix+"* may not reach this node nor private networks; allowed:", describe(allow))
	}
	if once {
		return 0
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			// The rules stay: a guard stopped on purpose must not open the node.
			return 0
		case <-tick.C:
			if err := apply(); err != nil {
				fmt.Fprintln(os.Stderr, "guard:", err)
			}
		}
	}
}

// preloadDir is where the node guard keeps the node's ld.so.preload for vGPU containers (a bind
// of the host's /var/lib/tianqi-vgpu): they mount the file read-only as /etc/ld.so.preload, so
// HAMi-core is loaded into every process, whatever the tenant does to LD_PRELOAD.
const preloadDir = "/vgpu"

// writePreload writes preloadDir/ld.so.preload naming the library, replacing it atomically.
func writePreload(library string) error {
	if info, err := os.Stat(preloadDir); err != nil || !info.IsDir() {
		return fmt.Errorf("no %s directory to write ld.so.preload into", preloadDir)
	}
	target := preloadDir + "/ld.so.preload"
	if current, err := os.ReadFile(target); err == nil && string(current) == library+"\n" {
		return nil
	}
	temp := target + ".new"
	if err := os.WriteFile(temp, []byte(library+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(temp, target)
}

// blockedRanges are what a tenant may not reach through the node (besides the node's own subnets):
// RFC 1918, shared address space (CGNAT), loopback, link-local (169.254.169.254, the clouds'
// metadata service), "this network", multicast and reserved; for IPv6 unique local, link-local,
// loopback, multicast and IPv4-mapped addresses.
var blockedRanges = []string{
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
	"192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
	"::1/128", "::ffff:0:0/96", "fc00::/7", "fe80::/10", "ff00::/8",
}

// resolvConf is the node's resolver configuration as the guard (host network) sees it.
const resolvConf = "/etc/resolv.conf"

// nameServers are the name servers a resolv.conf names, as /32 or /128 networks (loopback ones left
// out: Docker does not forward to those).
func nameServers(path string) []*net.IPNet {
	content, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []*net.IPNet
	for _, line := range strings.Split(string(content), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		ip := net.ParseIP(strings.SplitN(fields[1], "%", 2)[0])
		if ip == nil || ip.IsLoopback() {
			continue
		}
		if ip4 := ip.To4(); ip4 != nil {
			out = append(out, &net.IPNet{IP: ip4, Mask: net.CIDRMask(32, 32)})
		} else {
			out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(128, 128)})
		}
	}
	return out
}

func parseCIDRs(list string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !strings.Contains(item, "/") {
			if ip := net.ParseIP(item); ip != nil && ip.To4() != nil {
				item += "/32"
			} else {
				item += "/128"
			}
		}
		_, network, err := net.ParseCIDR(item)
		if err != nil {
			return nil, fmt.Errorf("--allow: %q is not an address or CIDR", item)
		}
		out = append(out, network)
	}
	return out, nil
}

func describe(nets []*net.IPNet) string {
	if len(nets) == 0 {
		return "nothing"
	}
	parts := make([]string, len(nets))
	for i, n := range nets {
		parts[i] = n.String()
	}
	return strings.Join(parts, ",")
}

// nodeSubnets are the subnets of the node's own addresses, tenant bridges left out (a tenant's
// bridge is its own; another tenant's is Docker's isolation's to refuse).
func nodeSubnets() []*net.IPNet {
	var out []*net.IPNet
	interfaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	for _, iface := range interfaces {
		if strings.HasPrefix(iface.Name, tenantPrefix) {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			continue
		}
		for _, addr := range addrs {
			if ipnet, ok := addr.(*net.IPNet); ok && !ipnet.IP.IsLoopback() && !ipnet.IP.IsLinkLocalUnicast() {
				out = append(out, &net.IPNet{IP: ipnet.IP.Mask(ipnet.Mask), Mask: ipnet.Mask})
			}
		}
	}
	return out
}

// destinationMatch matches the destination address of an IPv4 or IPv6 packet against a network.
func destinationMatch(network *net.IPNet) []expr.Any {
	// The mask's length tells the family: an IPv4-mapped IPv6 network (::ffff:0:0/96) is IPv6 here.
	if ip4 := network.IP.To4(); ip4 != nil && len(network.Mask) == net.IPv4len {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte(network.Mask), Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(ip4)},
		}
	}
	mask := []byte(network.Mask)
	if len(mask) != 16 {
		return nil
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16, Mask: mask, Xor: make([]byte, 16)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(network.IP.To16())},
	}
}

// established matches answers: packets of connections already accepted, and related ones.
func established() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// dnsTo matches DNS (destination port 53) over one transport protocol.
func dnsTo(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(53)},
	}
}

// removeRules deletes the guard's table, if it is there.
func removeRules() error {
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("nftables unavailable: %w", err)
	}
	for _, existing := range tables {
		if existing.Name == tableName {
			conn.DelTable(existing)
			return conn.Flush()
		}
	}
	return nil
}

// applyRules replaces the guard's table in one transaction:
//
//	table inet tianqi {
//	  chain input {
//	    type filter hook input priority filter - 10; policy accept;
//	    iifname "tqn*" ct state established,related accept
//	    iifname "tqn*" meta l4proto { tcp, udp } th dport 53 accept
//	    iifname "tqn*" drop
//	  }
//	  chain forward {
//	    type filter hook forward priority filter - 10; policy accept;
//	    iifname "tqn*" ct state established,related accept
//	    iifname "tqn*" oifname "tqn*" accept          # its own bridge (Docker refuses the others)
//	    iifname "tqn*" ip daddr <allowed> accept       # --allow
//	    iifname "tqn*" ip daddr <name servers> th dport 53 accept
//	    iifname "tqn*" ip daddr <blocked, node subnets> drop
//	  }
//	}
//
// An accept here ends only this chain: Docker's own chains still see the packet.
func applyRules(allow []*net.IPNet) error {
	conn, err := nftables.New()
	if err != nil {
		return err
	}
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: tableName}
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("nftables unavailable: %w", err)
	}
	for _, existing := range tables {
		if existing.Name == tableName {
			conn.DelTable(table)
		}
	}
	conn.AddTable(table)
	priority := nftables.ChainPriority(*nftables.ChainPriorityFilter - 10)
	policy := nftables.ChainPolicyAccept
	input := conn.AddChain(&nftables.Chain{
		Name: "input", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: &priority, Policy: &policy,
	})
	fromTenant := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(tenantPrefix)},
	}
	rule := func(exprs ...expr.Any) {
		conn.AddRule(&nftables.Rule{Table: table, Chain: input, Exprs: append(append([]expr.Any{}, fromTenant...), exprs...)})
	}
	rule(append(established(), &expr.Verdict{Kind: expr.VerdictAccept})...)
	for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		rule(append(dnsTo(proto), &expr.Verdict{Kind: expr.VerdictAccept})...)
	}
	rule(&expr.Verdict{Kind: expr.VerdictDrop})

	forward := conn.AddChain(&nftables.Chain{
		Name: "forward", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: &priority, Policy: &policy,
	})
	forwardRule := func(exprs ...expr.Any) {
		conn.AddRule(&nftables.Rule{Table: table, Chain: forward, Exprs: append(append([]expr.Any{}, fromTenant...), exprs...)})
	}
	forwardRule(append(established(), &expr.Verdict{Kind: expr.VerdictAccept})...)
	forwardRule(
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(tenantPrefix)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	)
	for _, network := range allow {
		if match := destinationMatch(network); match != nil {
			forwardRule(append(match, &expr.Verdict{Kind: expr.VerdictAccept})...)
		}
	}
	// DNS keeps working: Docker's resolver in a tenant's network asks the node's name servers from
	// the tenant's namespace, and those are often on a private address. Port 53 of those only.
	for _, server := range nameServers(resolvConf) {
		for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			if match := destinationMatch(server); match != nil {
				forwardRule(append(append(match, dnsTo(proto)...), &expr.Verdict{Kind: expr.VerdictAccept})...)
			}
		}
	}
	blocked := nodeSubnets()
	for _, cidr := range blockedRanges {
		_, network, _ := net.ParseCIDR(cidr)
		blocked = append(blocked, network)
	}
	for _, network := range blocked {
		if match := destinationMatch(network); match != nil {
			forwardRule(append(match, &expr.Verdict{Kind: expr.VerdictDrop})...)
		}
	}
	return conn.Flush()
}
