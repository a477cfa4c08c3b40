package modbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	gmb "github.com/goburrow/modbus"
)

// MBAP header: transaction id, protocol id, length, unit id.
const (
	headerSize = 7
	// maxLength is the largest length field: the unit id and a 253-byte PDU.
	maxLength = 254
	// minLength is the smallest: the unit id, a function code and one byte (an
	// exception code is the shortest answer).
	minLength = 3
)

var (
	errNotConnected = errors.New("not connected")
	// errCancelled marks a request abandoned when its ctx ended: its answer may still
	// arrive, so the connection cannot carry another request.
	errCancelled = errors.New("request cancelled")
)

// aLongTimeAgo is a deadline in the past, to wake a blocked read or write at once.
var aLongTimeAgo = time.Unix(1, 0)

// transport carries goburrow's requests over one TCP connection with a deadline per
// request and ctx cancellation, neither of which goburrow's own TCP transporter has.
// The caller holds the link's token around every use, so there is no lock here.
type transport struct {
	conn    net.Conn
	timeout time.Duration
	ctx     context.Context // of the request in flight
	buf     [headerSize + maxLength]byte

	// watched is the ctx whose end already wakes the connection (the one it was dialled
	// with, Run's): requests under it skip registering a callback of their own, which
	// the poll loop would otherwise do thousands of times a second.
	watched context.Context
	unwatch func() bool
}

// attach makes c the connection, woken when ctx ends.
func (t *transport) attach(ctx context.Context, c net.Conn) {
	t.detach()
	t.conn = c
	t.watched = ctx
	t.unwatch = context.AfterFunc(ctx, func() { _ = c.SetDeadline(aLongTimeAgo) })
}

// detach closes the connection, if any.
func (t *transport) detach() {
	if t.conn == nil {
		return
	}
	t.unwatch()
	t.conn.Close()
	t.conn, t.watched, t.unwatch = nil, nil, nil
}

// Send implements goburrow's Transporter: it writes one request ADU and reads the
// answer, checking its header against the request. The returned slice is reused by
// the next Send.
func (t *transport) Send(req []byte) ([]byte, error) {
	c := t.conn
	if c == nil {
		return nil, errNotConnected
	}
	if len(req) < headerSize {
		return nil, fmt.Errorf("request of %d bytes is shorter than its header", len(req))
	}
	ctx := t.ctx
	deadline := time.Now().Add(t.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := c.SetDeadline(deadline); err != nil {
		return nil, err
	}
	if ctx != t.watched {
		stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(aLongTimeAgo) })
		defer stop()
	}
	// Checked after the deadline was set: if ctx ended before, the callback above has
	// already run or this catches it.
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %w", errCancelled, ctx.Err())
	}
	resp, err := t.exchange(c, req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", errCancelled, ctx.Err())
		}
		// The connection's deadline may be ctx's own and pass a moment before ctx
		// says so itself.
		if d, ok := ctx.Deadline(); ok && d.Equal(deadline) && !time.Now().Before(d) {
			return nil, fmt.Errorf("%w: %w", errCancelled, context.DeadlineExceeded)
		}
	}
	return resp, err
}

func (t *transport) exchange(c net.Conn, req []byte) ([]byte, error) {
	if _, err := c.Write(req); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(c, t.buf[:headerSize]); err != nil {
		return nil, err
	}
	n, err := checkHeader(req, t.buf[:headerSize])
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(c, t.buf[headerSize:headerSize+n-1]); err != nil {
		return nil, err
	}
	return t.buf[:headerSize+n-1], nil
}

// checkHeader checks a response's MBAP header against its request's and returns the
// length field. A transaction id that does not match means the two sides are out of
// step (an answer to an earlier, timed-out request): the connection must be dropped.
func checkHeader(req, hdr []byte) (int, error) {
	if len(req) < headerSize || len(hdr) < headerSize {
		return 0, fmt.Errorf("header of %d bytes, want %d", len(hdr), headerSize)
	}
	if got, want := binary.BigEndian.Uint16(hdr), binary.BigEndian.Uint16(req); got != want {
		return 0, &txMismatchError{got: got, want: want}
	}
	if p := binary.BigEndian.Uint16(hdr[2:]); p != 0 {
		return 0, fmt.Errorf("response protocol id %d is not 0 (Modbus)", p)
	}
	n := int(binary.BigEndian.Uint16(hdr[4:]))
	if n < minLength || n > maxLength {
		return 0, fmt.Errorf("response length %d is out of range %d..%d", n, minLength, maxLength)
	}
	if hdr[6] != req[6] {
		return 0, fmt.Errorf("response unit id %d does not match request %d", hdr[6], req[6])
	}
	return n, nil
}

type txMismatchError struct{ got, want uint16 }

func (e *txMismatchError) Error() string {
	return fmt.Sprintf("response transaction id %d does not match request %d", e.got, e.want)
}

// ExceptionError is a Modbus exception response: the device answered, and refused.
type ExceptionError struct {
	Code byte
}

func (e *ExceptionError) Error() string {
	return fmt.Sprintf("exception %d (%s)", e.Code, exceptionName(e.Code))
}

func exceptionName(code byte) string {
	switch code {
	case gmb.ExceptionCodeIllegalFunction:
		return "illegal function"
	case gmb.ExceptionCodeIllegalDataAddress:
		return "illegal data address"
	case gmb.ExceptionCodeIllegalDataValue:
		return "illegal data value"
	case gmb.ExceptionCodeServerDeviceFailure:
		return "server device failure"
	case gmb.ExceptionCodeAcknowledge:
		return "acknowledge"
	case gmb.ExceptionCodeServerDeviceBusy:
		return "server device busy"
	case gmb.ExceptionCodeMemoryParityError:
		return "memory parity error"
	case gmb.ExceptionCodeGatewayPathUnavailable:
		return "gateway path unavailable"
	case gmb.ExceptionCodeGatewayTargetDeviceFailedToRespond:
		return "gateway target device failed to respond"
	}
	return "unknown"
}

// classify turns goburrow's exception error into ExceptionError; any other error is
// returned as it is.
func classify(err error) error {
	var me *gmb.ModbusError
	if errors.As(err, &me) && me.FunctionCode&0x80 != 0 {
		return &ExceptionError{Code: me.ExceptionCode}
	}
	return err
}
