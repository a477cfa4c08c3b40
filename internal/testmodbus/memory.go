package testmodbus

import (
	"sync"

	smb "github.com/simonvetter/modbus"
)

// MemorySize is how many items each table of a Memory holds.
const MemorySize = 1024

// Memory is the data of an in-process simonvetter/modbus server for tests: coils and
// holding registers that keep what is written, discrete inputs that are on at even
// addresses, and input registers that hold 1000 plus their address.
type Memory struct {
	mu      sync.Mutex
	coils   [MemorySize]bool
	holding [MemorySize]uint16
}

// HandleCoils implements smb.RequestHandler.
func (h *Memory) HandleCoils(req *smb.CoilsRequest) ([]bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if int(req.Addr)+int(req.Quantity) > len(h.coils) {
		return nil, smb.ErrIllegalDataAddress
	}
	if req.IsWrite {
		copy(h.coils[req.Addr:], req.Args)
		return nil, nil
	}
	return append([]bool(nil), h.coils[req.Addr:int(req.Addr)+int(req.Quantity)]...), nil
}

// HandleDiscreteInputs implements smb.RequestHandler.
func (h *Memory) HandleDiscreteInputs(req *smb.DiscreteInputsRequest) ([]bool, error) {
	if int(req.Addr)+int(req.Quantity) > MemorySize {
		return nil, smb.ErrIllegalDataAddress
	}
	out := make([]bool, req.Quantity)
	for i := range out {
		out[i] = (int(req.Addr)+i)%2 == 0
	}
	return out, nil
}

// HandleHoldingRegisters implements smb.RequestHandler.
func (h *Memory) HandleHoldingRegisters(req *smb.HoldingRegistersRequest) ([]uint16, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if int(req.Addr)+int(req.Quantity) > len(h.holding) {
		return nil, smb.ErrIllegalDataAddress
	}
	if req.IsWrite {
		copy(h.holding[req.Addr:], req.Args)
		return nil, nil
	}
	return append([]uint16(nil), h.holding[req.Addr:int(req.Addr)+int(req.Quantity)]...), nil
}

// HandleInputRegisters implements smb.RequestHandler.
func (h *Memory) HandleInputRegisters(req *smb.InputRegistersRequest) ([]uint16, error) {
	if int(req.Addr)+int(req.Quantity) > MemorySize {
		return nil, smb.ErrIllegalDataAddress
	}
	out := make([]uint16, req.Quantity)
	for i := range out {
		out[i] = uint16(1000 + int(req.Addr) + i)
	}
	return out, nil
}
