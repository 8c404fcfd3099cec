// The pause program of the test node's pod sandboxes: it holds a pod's namespaces open
// and sleeps until the runtime stops it (SIGTERM or SIGINT end it at once).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
