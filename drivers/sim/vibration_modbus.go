package sim

import (
	"io"
	"log"
	"log/slog"
	"math"
	"sync"
	"time"

	smb "github.com/simonvetter/modbus"
)

// Register map of the vibration simulator's Modbus server.
const (
	// VibCounterRegister holds the sample counter: the sample's sequence number modulo
	// 65536, so a poller sees how many samples passed between two reads.
	VibCounterRegister = 100
	vibRegisters       = VibCounterRegister + 1
	// VibBlockRegister starts the waveform block, as vibration transmitters serve a
	// waveform over Modbus: the counter of the block's newest sample, then for each
	// channel VibBlockSamples samples, oldest first (channel c's sample i at
	// VibBlockRegister+1+c*VibBlockSamples+i). A poll every 20 ms reading the block in
	// one request sees every sample of a 2048 Hz signal, with time to spare.
	VibBlockRegister = 200
	VibBlockSamples  = 60
)

// Milli converts a value in g to the int16 two's complement mg a register holds,
// rounding and clamping at the int16 range.
func Milli(g float64) uint16 {
	v := math.Round(g * 1000)
	v = max(math.MinInt16, min(math.MaxInt16, v))
	return uint16(int16(v))
}

// vibServer serves the simulated motor over Modbus TCP: a poll reads the sample whose
// time is the poll's moment, from a short history the driver keeps filled a tick
// ahead, so the poller samples the signal as an accelerometer's Modbus gateway would.
type vibServer struct {
	addr  string
	n     int
	rate  float64
	size  int64
	log   *slog.Logger
	start time.Time

	mu   sync.Mutex
	regs []uint16 // size samples of n registers, by sample index modulo size
	gen  int64    // samples put so far

	srv       *smb.ModbusServer
	nextTry   time.Time
	backoff   time.Duration
	lastError string
}

const (
	vibListenBackoffMin = time.Second
	vibListenBackoffMax = 30 * time.Second
)

// newVibServer serves samples put by a driver whose sample k is due at start + k/rate.
func newVibServer(addr string, n int, rate float64, lead int64, start time.Time, log *slog.Logger) *vibServer {
	size := 2*lead + int64(math.Ceil(rate*vibTick.Seconds())) + 2 + VibBlockSamples
	return &vibServer{
		addr: addr, n: n, rate: rate, size: size, log: log,
		start: start, regs: make([]uint16, size*int64(n)),
		backoff: vibListenBackoffMin,
	}
}

// put stores sample k, which must follow the one put before.
func (s *vibServer) put(k int64, vals []float64) {
	s.mu.Lock()
	row := s.regs[(k%s.size)*int64(s.n):]
	for c, v := range vals {
		row[c] = Milli(v)
	}
	s.gen = k + 1
	s.mu.Unlock()
}

// tableLen is the number of registers the server answers for, holes included.
func (s *vibServer) tableLen() int { return VibBlockRegister + 1 + s.n*VibBlockSamples }

// table fills dst (tableLen long) with the registers at this moment.
func (s *vibServer) table(dst []uint16) {
	clear(dst)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen == 0 {
		return
	}
	k := int64(time.Since(s.start).Seconds() * s.rate)
	k = max(s.gen-s.size+VibBlockSamples, min(s.gen-1, k))
	copy(dst, s.regs[(k%s.size)*int64(s.n):(k%s.size+1)*int64(s.n)])
	dst[VibCounterRegister] = uint16(k + 1)
	dst[VibBlockRegister] = uint16(k + 1)
	for i := range int64(VibBlockSamples) {
		j := k - VibBlockSamples + 1 + i
		if j < 0 {
			continue
		}
		row := s.regs[(j%s.size)*int64(s.n):]
		for c := range s.n {
			dst[VibBlockRegister+1+c*VibBlockSamples+int(i)] = row[c]
		}
	}
}

// tryStart listens if the server is not up yet, retrying with capped backoff: the port
// may still be held by a previous run that is shutting down. The samples go on either
// way; only the Modbus side waits.
func (s *vibServer) tryStart() {
	if s.srv != nil || time.Now().Before(s.nextTry) {
		return
	}
	srv, err := smb.NewServer(&smb.ServerConfiguration{
		URL:        "tcp://" + s.addr,
		Timeout:    time.Minute,
		MaxClients: 16,
		// The library logs each client's coming and going; that is debug detail.
		Logger: log.New(io.Discard, "", 0),
	}, &vibHandler{s: s})
	if err == nil {
		err = srv.Start()
	}
	if err != nil {
		s.nextTry = time.Now().Add(s.backoff)
		if msg := err.Error(); msg != s.lastError {
			s.log.Warn("simulated motor cannot serve modbus, retrying", "modbus_listen", s.addr, "err", err, "retry_in", s.backoff)
			s.lastError = msg
		}
		s.backoff = min(2*s.backoff, vibListenBackoffMax)
		return
	}
	s.srv = srv
	s.log.Info("simulated motor serving modbus", "modbus_listen", s.addr, "channels", s.n, "counter_register", VibCounterRegister, "block_register", VibBlockRegister, "block_samples", VibBlockSamples)
}

// stop closes the listener and every client connection. The library's goroutines
// end on their closed sockets; it offers no way to wait for them.
func (s *vibServer) stop() {
	if s.srv != nil {
		s.srv.Stop()
		s.srv = nil
	}
}

// vibHandler answers reads of holding and input registers 0..100 and the waveform
// block (the same table in both); everything else is refused, since the simulator has
// nothing to write to.
type vibHandler struct{ s *vibServer }

func (h *vibHandler) read(addr, qty uint16, write bool) ([]uint16, error) {
	if write {
		return nil, smb.ErrIllegalFunction
	}
	// Two areas: the latest sample and its counter, and the waveform block.
	end := int(addr) + int(qty)
	inSample := end <= vibRegisters
	inBlock := int(addr) >= VibBlockRegister && end <= h.s.tableLen()
	if !inSample && !inBlock {
		return nil, smb.ErrIllegalDataAddress
	}
	t := make([]uint16, h.s.tableLen())
	h.s.table(t)
	return t[addr:end], nil
}

func (h *vibHandler) HandleCoils(*smb.CoilsRequest) ([]bool, error) {
	return nil, smb.ErrIllegalFunction
}

func (h *vibHandler) HandleDiscreteInputs(*smb.DiscreteInputsRequest) ([]bool, error) {
	return nil, smb.ErrIllegalFunction
}

func (h *vibHandler) HandleHoldingRegisters(req *smb.HoldingRegistersRequest) ([]uint16, error) {
	return h.read(req.Addr, req.Quantity, req.IsWrite)
}

func (h *vibHandler) HandleInputRegisters(req *smb.InputRegistersRequest) ([]uint16, error) {
	return h.read(req.Addr, req.Quantity, false)
}
