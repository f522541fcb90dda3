package lab

import (
	"os"
	"testing"
)

// TestAliveFollowsTheReap: for a process the lab started, its exit channel
// alone says whether it runs. /proc can report a dying multi-threaded
// process gone and then alive again; a start that trusted it found a
// SIGKILLed weftd "still running" (TestRestartDuringOutage/vxlan).
func TestAliveFollowsTheReap(t *testing.T) {
	self, err := newProc(os.Getpid(), "test")
	if err != nil {
		t.Fatal(err)
	}
	// /proc says gone (another start time), the reap has not happened yet.
	gone := &Proc{PID: self.PID, StartTime: self.StartTime + 1, Cmd: "test"}
	if gone.Alive() {
		t.Fatal("Proc.Alive with another start time = true")
	}
	notReaped := make(chan struct{})
	reaped := make(chan struct{})
	close(reaped)
	l := &Lab{exited: map[int]<-chan struct{}{self.PID: notReaped}}
	if !l.alive(gone) {
		t.Error("alive = false before the reap, though this lab started the process")
	}
	l.exited[self.PID] = reaped
	if l.alive(self) {
		t.Error("alive = true after the reap, though /proc still lists the pid")
	}
	// A process this lab did not start (an earlier weftctl did): /proc.
	delete(l.exited, self.PID)
	if !l.alive(self) || l.alive(gone) {
		t.Errorf("without an exit channel: alive(self) = %v, alive(gone) = %v; want true, false", l.alive(self), l.alive(gone))
	}
}
