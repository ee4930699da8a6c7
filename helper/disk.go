package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// statfs prints the size and the free space of the filesystem holding path, in bytes: "<total> <free>".
// The platform runs it in a container with the engine's data directory bound in, to hold the
// disk a node's form declares against what is there.
func statfs(path string) int {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		fmt.Fprintln(os.Stderr, "statfs:", err)
		return 1
	}
	fmt.Printf("%d %d\n", uint64(st.Blocks)*uint64(st.Bsize), uint64(st.Bavail)*uint64(st.Bsize))
	return 0
}
