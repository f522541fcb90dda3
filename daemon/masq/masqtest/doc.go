// Package masqtest provides an in-memory masq.Manager and masq.PeerFilter
// for daemon unit tests that need neither root nor a kernel.
package masqtest
