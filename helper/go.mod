module tianqi/helper

go 1.23.0

require (
	github.com/google/nftables v0.3.0
	github.com/pkg/sftp v1.13.10
	golang.org/x/sys v0.35.0
)

require (
	github.com/google/go-cmp v0.6.0 // indirect
	github.com/kr/fs v0.1.0 // indirect
	github.com/mdlayher/netlink v1.7.3-0.20250113171957-fbb4dce95f42 // indirect
	github.com/mdlayher/socket v0.5.0 // indirect
	golang.org/x/crypto v0.41.0 // indirect
	golang.org/x/net v0.42.0 // indirect
	golang.org/x/sync v0.6.0 // indirect
)
