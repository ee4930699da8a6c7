package main

import (
	"fmt"
	"os"
	"os/signal"
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
const tableName = "tianqi"

// guard keeps the node's firewall closed to tenant containers: packets that arrive from a tenant
// bridge addressed to the node itself (any of its addresses: the Docker API port, sshd, the
// platform if it runs there) are dropped, except answers to connections the node opened and DNS.
// Traffic through the node (to the internet) is not touched. It runs as the node guard container
// (host network, CAP_NET_ADMIN, restart always) and applies the rules again every 30 s, so a
// firewall reload on the node cannot leave them off for long.
func guard(args []string) int {
	once, firewall, preload := false, true, ""
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--once":
			once = true
		case "--no-firewall":
			firewall = false
		case "--preload":
			if i+1 < len(args) {
				preload = args[i+1]
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
			return applyRules()
		}
		return nil
	}
	if err := apply(); err != nil {
		fmt.Fprintln(os.Stderr, "guard:", err)
		return 1
	}
	if firewall {
		fmt.Fprintln(os.Stderr, "guard: tenant bridges", tenantPrefix+"* may not reach this node")
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

// applyRules replaces the guard's table in one transaction:
//
//	table inet tianqi {
//	  chain input {
//	    type filter hook input priority filter - 10; policy accept;
//	    iifname "tqn*" ct state established,related accept
//	    iifname "tqn*" meta l4proto { tcp, udp } th dport 53 accept
//	    iifname "tqn*" drop
//	  }
//	}
func applyRules() error {
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
	rule(
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	)
	for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		rule(
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(53)},
			&expr.Verdict{Kind: expr.VerdictAccept},
		)
	}
	rule(&expr.Verdict{Kind: expr.VerdictDrop})
	return conn.Flush()
}
