package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

func TestParseCIDRs(t *testing.T) {
	nets, err := parseCIDRs("10.0.5.20, 10.0.6.0/24,fd00::1,,")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.5.20/32", "10.0.6.0/24", "fd00::1/128"}
	if describe(nets) != "10.0.5.20/32,10.0.6.0/24,fd00::1/128" {
		t.Fatalf("got %s, want %v", describe(nets), want)
	}
	for _, bad := range []string{"10.0.0.0/33", "nonsense", "10.0.0.1/8/1"} {
		if _, err := parseCIDRs(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// Every blocked range makes a rule of its own family with a mask as long as its address: the
// kernel refuses the whole table otherwise (an IPv4-mapped range once did, as IPv4 with no mask).
func TestDestinationMatchFamilies(t *testing.T) {
	for _, cidr := range append(blockedRanges, "192.0.2.0/24", "fd00::/64") {
		_, network, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		match := destinationMatch(network)
		if len(match) != 5 {
			t.Fatalf("%s: %d expressions", cidr, len(match))
		}
		payload := match[2].(*expr.Payload)
		bitwise := match[3].(*expr.Bitwise)
		compare := match[4].(*expr.Cmp)
		if int(payload.Len) != len(bitwise.Mask) || int(payload.Len) != len(compare.Data) || int(bitwise.Len) != len(bitwise.Mask) {
			t.Errorf("%s: payload %d bytes, mask %d, address %d", cidr, payload.Len, len(bitwise.Mask), len(compare.Data))
		}
		v6 := network.IP.To4() == nil || len(network.Mask) == net.IPv6len
		if v6 != (payload.Len == 16) {
			t.Errorf("%s: matched as the wrong family", cidr)
		}
	}
}

func TestNameServers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	content := "# generated\nnameserver 10.255.255.53\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nsearch lab\nnameserver 2001:db8::53\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := describe(nameServers(path)); got != "10.255.255.53/32,fe80::1/128,2001:db8::53/128" {
		t.Fatalf("got %s", got)
	}
	if got := nameServers(filepath.Join(t.TempDir(), "missing")); got != nil {
		t.Fatalf("got %v for a missing file", got)
	}
}

// Applies the rules to a table of the test's own, then removes it (root with nftables only).
func TestApplyAndRemoveRules(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for nftables")
	}
	saved := tableName
	tableName = fmt.Sprintf("tianqi_test_%d", os.Getpid())
	defer func() { tableName = saved }()
	_, allowed, _ := net.ParseCIDR("10.9.8.7/32")
	if err := applyRules([]*net.IPNet{allowed}); err != nil {
		t.Skipf("nftables not usable here: %v", err)
	}
	present := func() bool {
		conn, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
		if err != nil {
			t.Fatal(err)
		}
		for _, table := range tables {
			if table.Name == tableName {
				chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
				if err != nil {
					t.Fatal(err)
				}
				count := 0
				for _, chain := range chains {
					if chain.Table.Name == tableName {
						count++
					}
				}
				if count != 2 {
					t.Fatalf("%d chains, want input and forward", count)
				}
				return true
			}
		}
		return false
	}
	if !present() {
		t.Fatal("no table after applyRules")
	}
	// applied twice, still one table (replaced in one transaction)
	if err := applyRules(nil); err != nil || !present() {
		t.Fatalf("second apply: %v", err)
	}
	if err := removeRules(); err != nil {
		t.Fatal(err)
	}
	if present() {
		t.Fatal("table still there after removeRules")
	}
	if err := removeRules(); err != nil {
		t.Fatalf("removing an absent table: %v", err)
	}
}
