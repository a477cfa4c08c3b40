// Package dpi inspects Modbus TCP traffic: it frames a TCP byte stream into ADUs, parses
// each ADU in place without allocating, and classifies what is wrong with it into twelve
// anomaly classes with stable names and severities, so that an inline proxy between a
// SCADA/HMI and a PLC can alert on or block anomalous frames.
//
// The parser (ADULen, Parse, Splitter) judges one frame on its own, against the Modbus
// Application Protocol Specification v1.1b3 and the Modbus Messaging on TCP/IP
// Implementation Guide v1.0b; the classes that need context (policy, the register map,
// outstanding requests, rates) are decided by the proxy.
package dpi

import "strconv"

// Class is an anomaly class; its string is its stable name in alerts and metrics.
type Class string

// The anomaly classes. Their names are part of the public surface (alert payloads,
// metric labels, configuration keys): never rename one.
const (
	InvalidProtocolID    Class = "invalid_protocol_id"
	InvalidLength        Class = "invalid_length"         // MBAP length disagrees with the PDU
	MalformedPDU         Class = "malformed_pdu"          // truncated or over-long for its function
	UnknownFunctionCode  Class = "unknown_function_code"  // not a public function (or sub-function) code
	FunctionNotAllowed   Class = "function_not_allowed"   // policy
	FunctionCodeConflict Class = "function_code_conflict" // response function != request's
	AddressOutOfRange    Class = "address_out_of_range"   // outside the configured register map
	QuantityOutOfRange   Class = "quantity_out_of_range"  // beyond the spec's limits (parser) or the map (proxy)
	UnitIDNotAllowed     Class = "unit_id_not_allowed"
	UnsolicitedResponse  Class = "unsolicited_response" // no outstanding request / unknown transaction id
	TransactionIDReuse   Class = "transaction_id_reuse" // a second request with an id still in flight
	Flood                Class = "flood"                // request or exception rate above a limit per client
)

// Classes lists every class, in a fixed order, so that metrics can be pre-created and
// configuration keys validated.
var Classes = []Class{
	InvalidProtocolID,
	InvalidLength,
	MalformedPDU,
	UnknownFunctionCode,
	FunctionNotAllowed,
	FunctionCodeConflict,
	AddressOutOfRange,
	QuantityOutOfRange,
	UnitIDNotAllowed,
	UnsolicitedResponse,
	TransactionIDReuse,
	Flood,
}

// Severity ranks how urgently a class needs a person: "low", "medium", "high", "critical".
type Severity string

// The severities, lowest first.
const (
	SeverityLow      Severity = "low"
	SeverityMedium   Severity = "medium"
	SeverityHigh     Severity = "high"
	SeverityCritical Severity = "critical"
)

// Severity returns the class's severity, or "" for a string that is not one of Classes.
//
// Critical is kept for what can change a process on its own (a function the client may not
// use, typically a write); high for what points at injection or tampering (a response
// nobody asked for or of the wrong function, broken framing, a range outside the map, a
// flood); medium for what scanners and broken stacks produce; low for what a correct but
// impatient client can cause (retrying with an id still in flight).
func (c Class) Severity() Severity {
	switch c {
	case FunctionNotAllowed:
		return SeverityCritical
	case InvalidLength, FunctionCodeConflict, AddressOutOfRange, UnsolicitedResponse, Flood:
		return SeverityHigh
	case InvalidProtocolID, MalformedPDU, UnknownFunctionCode, QuantityOutOfRange, UnitIDNotAllowed:
		return SeverityMedium
	case TransactionIDReuse:
		return SeverityLow
	}
	return ""
}

// Direction says which way a frame travels.
type Direction uint8

// Request frames travel from the client (SCADA/HMI) to the server (PLC); Response frames
// back.
const (
	Request Direction = iota
	Response
)

// String returns "request" or "response", the values of the direction metric label.
func (d Direction) String() string {
	switch d {
	case Request:
		return "request"
	case Response:
		return "response"
	}
	return "direction(" + strconv.Itoa(int(d)) + ")"
}

// MBAPLen is the size of the MBAP header, unit identifier included.
const MBAPLen = 7

// MaxADU is the largest Modbus TCP ADU: the 7-byte MBAP header and at most 253 bytes of
// PDU.
const MaxADU = 260

// maxLengthField is the largest valid MBAP length field: the unit identifier and a
// 253-byte PDU.
const maxLengthField = MaxADU - 6

// ADULen reads the MBAP header at the start of buf (it needs MBAPLen bytes; with fewer it
// returns 0, nil: read more) and returns the whole ADU's length, 6+length field, which may
// exceed len(buf) (read more). It returns an error (a *FrameError with Class
// InvalidLength) when the length field is below 2 or above 254: the stream cannot be
// framed any more. It does not look at the protocol identifier: a frame with a wrong one
// can still be skipped over, and Parse reports it.
func ADULen(buf []byte) (n int, err error) {
	if len(buf) < MBAPLen {
		return 0, nil
	}
	l := int(buf[4])<<8 | int(buf[5])
	if l < 2 {
		return 0, &FrameError{Class: InvalidLength, Reason: "mbap length " + strconv.Itoa(l) + " is below 2 (unit and function)"}
	}
	if l > maxLengthField {
		return 0, &FrameError{Class: InvalidLength, Reason: "mbap length " + strconv.Itoa(l) + " is above 254 (unit and a 253-byte pdu)"}
	}
	return 6 + l, nil
}

// FrameError is an anomaly found while framing or parsing; Reason says what in the frame
// is wrong.
type FrameError struct {
	Class  Class
	Reason string
}

// Error gives "<class>: <reason>".
func (e *FrameError) Error() string { return string(e.Class) + ": " + e.Reason }

// Table is the data table a range addresses.
type Table uint8

// The four Modbus data tables, and TableNone for functions that address none.
const (
	TableNone Table = iota
	Coils
	DiscreteInputs
	HoldingRegisters
	InputRegisters
)

// String returns "none", "coil", "discrete", "holding" or "input", the names the register
// map configuration uses.
func (t Table) String() string {
	switch t {
	case TableNone:
		return "none"
	case Coils:
		return "coil"
	case DiscreteInputs:
		return "discrete"
	case HoldingRegisters:
		return "holding"
	case InputRegisters:
		return "input"
	}
	return "table(" + strconv.Itoa(int(t)) + ")"
}

// Frame is one ADU parsed in place: no allocation; ADU aliases the input, so a Frame is
// valid only as long as the bytes it was parsed from are.
type Frame struct {
	Dir               Direction
	TxID, ProtocolID  uint16 // MBAP fields
	Length            uint16 // MBAP length field: unit identifier + PDU
	Unit              uint8
	Function          uint8 // as on the wire, exception bit (0x80) included
	Exception         bool
	ExceptionCode     uint8
	Table             Table  // the table Address/Quantity address; TableNone when the function has no range (7, 8, 11, 12, 17, 20, 21, 43)
	Address, Quantity uint16 // see Parse for what they hold in each direction
	WriteAddress      uint16 // FC 23's write range (Table HoldingRegisters); 0 otherwise
	WriteQuantity     uint16
	Write             bool // the function changes the device's data: 5, 6, 15, 16, 21, 22, 23 (exceptions included)
	ADU               []byte
}

// Spec limits on quantities (Modbus Application Protocol v1.1b3, section 6).
const (
	maxReadBits      = 2000 // FC 1, 2
	maxReadRegisters = 125  // FC 3, 4, 23 read
	maxWriteBits     = 1968 // FC 15
	maxWriteRegs     = 123  // FC 16
	maxRWWriteRegs   = 121  // FC 23 write
	maxFIFOCount     = 31   // FC 24
	maxEventBytes    = 64   // FC 12 events
)

// Parse parses one whole ADU (len(adu) == n from ADULen) travelling in direction dir and
// returns the frame and the first anomaly the frame shows on its own, without context, or
// "" when it is clean. It never allocates and never reads outside adu, for any input.
//
// The rule for sizes: a PDU's size comes from the MBAP length. When the PDU is shorter
// than the fields its function always has, or a fixed-size PDU is any other size, the PDU
// is malformed (MalformedPDU); when a count field inside the PDU declares how long the
// rest is and the MBAP length disagrees with it, the length is invalid (InvalidLength).
//
// Checks, in this order; the first that fails gives the class:
//
//  1. Header. InvalidLength when adu is shorter than the 7-byte MBAP header;
//     InvalidProtocolID when the protocol identifier is not 0; InvalidLength when the
//     length field is outside 2..254 or len(adu) != 6+length field.
//  2. Function. UnknownFunctionCode when the function is not public (anything but 1-8, 11,
//     12, 15-17, 20-24, 43: the user-defined 65-72 and 100-110 count as unknown, as
//     nothing here knows their layout), when a request carries the exception bit, when an
//     exception response's function (without the bit) is unknown, and when the sub-code
//     that names the operation is undefined: a reserved FC 8 sub-function, an FC 43 MEI
//     type other than 13 (CANopen) and 14 (device identification); so an allow-list of
//     function codes never meets an operation it cannot name. (An FC 8 or FC 43 PDU too
//     short to hold its sub-code is MalformedPDU.)
//  3. Fixed fields. MalformedPDU when the PDU is shorter than the fields its function
//     always has (truncated), or a fixed-size PDU is longer or shorter than its size: FC
//     1-6 requests are exactly 5 bytes, FC 7, 11, 12, 17 requests 1, FC 22 7, FC 24
//     requests 3, FC 43/14 requests 4, exception responses 2.
//  4. Count fields. InvalidLength when a count field declares the PDU's size and the PDU
//     is not that size: the byte count of FC 15, 16, 20, 21, 23 requests and of FC 1-4,
//     12, 17, 20, 21, 23 responses, FC 24's 16-bit byte count, FC 43/14's object list.
//  5. Quantities. QuantityOutOfRange when a quantity is outside the spec's bounds: reads
//     of 1..2000 coils or discrete inputs, 1..125 registers; writes of 1..1968 coils,
//     1..123 registers; FC 23 read 1..125, write 1..121; or when a range runs past the
//     last address, 65535. In responses the count a byte count carries is checked the
//     same way (1..250 bytes of bits, 2..250 bytes of registers), and an FC 24 FIFO count
//     above 31.
//  6. Fields against each other and values. MalformedPDU when a byte count disagrees with
//     the quantity (FC 15, 16, 23 requests, FC 24 responses), a register byte count is
//     odd, FC 20/21 sub-records do not fill their byte count or name a reference type
//     other than 6, an FC 5 value is not 0x0000/0xFF00, FC 8 data is not whole words, an
//     FC 12 response carries more than 64 event bytes, an FC 43/14 read device id code is
//     outside 1..4 (or conformity level, more-follows or, for individual access, the
//     object count is not what the spec allows), an exception code is undefined (1-8, 10,
//     11 are defined; 7 is the negative acknowledge of earlier editions).
//
// Frame fields: the MBAP fields are set whenever adu holds the header, Function whenever
// it holds a PDU; the others as far as parsing got. Table, Write and Exception follow the
// function in both directions. Address and Quantity hold: in requests, the range read or
// written (FC 1-6, 15, 16, 22, 23's read range; FC 5, 6, 22 a quantity of 1; FC 24 the
// FIFO pointer address and 1); in write responses, the echoed range (FC 5, 6, 15, 16, 22);
// in read responses Address is 0 and Quantity is what the byte count carries: registers
// (FC 3, 4, 23: byte count/2), bits (FC 1, 2: byte count*8, the request's quantity
// rounded up to a multiple of 8) or FIFO registers (FC 24). A response cannot be checked
// against its request's range here: that is the proxy's part.
func Parse(adu []byte, dir Direction) (Frame, Class) {
	f, c, _ := ParseReason(adu, dir)
	return f, c
}

// ParseReason is Parse, with a constant text saying what is wrong ("" when clean) for
// alerts and logs. It does not allocate either.
func ParseReason(adu []byte, dir Direction) (f Frame, c Class, reason string) {
	f.Dir = dir
	f.ADU = adu
	if len(adu) < MBAPLen {
		return f, InvalidLength, "adu shorter than the 7-byte mbap header"
	}
	f.TxID = be16(adu[0], adu[1])
	f.ProtocolID = be16(adu[2], adu[3])
	f.Length = be16(adu[4], adu[5])
	f.Unit = adu[6]
	if f.ProtocolID != 0 {
		return f, InvalidProtocolID, "protocol identifier is not 0"
	}
	if f.Length < 2 || f.Length > maxLengthField {
		return f, InvalidLength, "mbap length outside 2..254"
	}
	if len(adu) != 6+int(f.Length) {
		return f, InvalidLength, "mbap length disagrees with the adu size"
	}
	pdu := adu[MBAPLen:] // at least one byte: Length >= 2
	f.Function = pdu[0]
	if dir == Request {
		c, reason = parseRequest(&f, pdu)
	} else {
		c, reason = parseResponse(&f, pdu)
	}
	return f, c, reason
}

func be16(hi, lo byte) uint16 { return uint16(hi)<<8 | uint16(lo) }

// known reports whether fc (without the exception bit) is a public function code.
func known(fc uint8) bool {
	switch fc {
	case 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24, 43:
		return true
	}
	return false
}

// describe sets the fields that follow from the function alone.
func describe(f *Frame, fc uint8) {
	switch fc {
	case 1, 5, 15:
		f.Table = Coils
	case 2:
		f.Table = DiscreteInputs
	case 3, 6, 16, 22, 23, 24:
		f.Table = HoldingRegisters
	case 4:
		f.Table = InputRegisters
	}
	switch fc {
	case 5, 6, 15, 16, 21, 22, 23:
		f.Write = true
	}
}

// rangeFits reports whether quantity items from addr stay within the 16-bit address space.
func rangeFits(addr, quantity uint16) bool { return int(addr)+int(quantity) <= 0x10000 }

// fixed checks a fixed-size PDU.
func fixed(pdu []byte, n int) (Class, string) {
	if len(pdu) < n {
		return MalformedPDU, "pdu truncated for its function"
	}
	if len(pdu) > n {
		return MalformedPDU, "pdu over-long for its function"
	}
	return "", ""
}

// diagSub reports whether an FC 8 sub-function is defined, and whether its data is
// fixed to one 16-bit word (every defined one but 0, Return Query Data, which echoes any
// data).
func diagSub(sub uint16) (defined, oneWord bool) {
	switch sub {
	case 0:
		return true, false
	case 1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 16, 17, 18, 20:
		return true, true
	}
	return false, false
}

// parseDiagnostics checks an FC 8 PDU, the same in both directions (the response echoes).
func parseDiagnostics(pdu []byte) (Class, string) {
	if len(pdu) < 3 {
		return MalformedPDU, "fc 8 pdu truncated before the sub-function"
	}
	defined, oneWord := diagSub(be16(pdu[1], pdu[2]))
	if !defined {
		return UnknownFunctionCode, "fc 8 sub-function is reserved"
	}
	if oneWord {
		return fixed(pdu, 5)
	}
	if len(pdu)%2 != 1 {
		return MalformedPDU, "fc 8 data is not whole 16-bit words"
	}
	return "", ""
}

// parseMEI returns the MEI type of an FC 43 PDU, or the anomaly when the PDU is too
// short or the type undefined.
func parseMEI(pdu []byte) (mei uint8, c Class, reason string) {
	if len(pdu) < 2 {
		return 0, MalformedPDU, "fc 43 pdu truncated before the mei type"
	}
	switch pdu[1] {
	case 13, 14:
		return pdu[1], "", ""
	}
	return pdu[1], UnknownFunctionCode, "fc 43 mei type is neither 13 nor 14"
}

// parseWriteFile checks an FC 21 PDU, the same in both directions (the response echoes):
// a byte count, then sub-requests of reference type 6, file, record, record length N and N
// registers.
func parseWriteFile(pdu []byte) (Class, string) {
	if len(pdu) < 11 {
		return MalformedPDU, "fc 21 pdu truncated before its first record"
	}
	if len(pdu) != 2+int(pdu[1]) {
		return InvalidLength, "fc 21 byte count disagrees with the mbap length"
	}
	for i := 2; i < len(pdu); {
		if len(pdu)-i < 7 {
			return MalformedPDU, "fc 21 sub-request truncated"
		}
		if pdu[i] != 6 {
			return MalformedPDU, "fc 21 reference type is not 6"
		}
		n := 2 * int(be16(pdu[i+5], pdu[i+6]))
		if n == 0 {
			return MalformedPDU, "fc 21 sub-request writes no record"
		}
		if len(pdu)-i-7 < n {
			return MalformedPDU, "fc 21 sub-requests exceed the byte count"
		}
		i += 7 + n
	}
	return "", ""
}

// parseWriteSingle reads a write single coil or register (5, 6) or mask write (22)
// PDU. Their normal response echoes the request, so both directions read alike.
func parseWriteSingle(f *Frame, pdu []byte, fc uint8) (Class, string) {
	n := 5
	if fc == 22 {
		n = 7
	}
	if c, r := fixed(pdu, n); c != "" {
		return c, r
	}
	f.Address = be16(pdu[1], pdu[2])
	f.Quantity = 1
	if fc == 5 {
		if v := be16(pdu[3], pdu[4]); v != 0x0000 && v != 0xFF00 {
			return MalformedPDU, "fc 5 value is neither 0x0000 nor 0xff00"
		}
	}
	return "", ""
}

// writeRange checks a write multiple (15, 16) range, in a request or its echo in the
// response, against the spec's limits.
func writeRange(f *Frame, fc uint8) (Class, string) {
	limit := uint16(maxWriteRegs)
	if fc == 15 {
		limit = maxWriteBits
	}
	if f.Quantity < 1 || f.Quantity > limit {
		return QuantityOutOfRange, "write quantity beyond the spec's limit"
	}
	if !rangeFits(f.Address, f.Quantity) {
		return QuantityOutOfRange, "range runs past address 65535"
	}
	return "", ""
}

func parseRequest(f *Frame, pdu []byte) (Class, string) {
	fc := pdu[0]
	if !known(fc) {
		return UnknownFunctionCode, "function code is not public"
	}
	describe(f, fc)
	switch fc {
	case 1, 2, 3, 4:
		if c, r := fixed(pdu, 5); c != "" {
			return c, r
		}
		f.Address = be16(pdu[1], pdu[2])
		f.Quantity = be16(pdu[3], pdu[4])
		limit := uint16(maxReadRegisters)
		if fc <= 2 {
			limit = maxReadBits
		}
		if f.Quantity < 1 || f.Quantity > limit {
			return QuantityOutOfRange, "read quantity beyond the spec's limit"
		}
		if !rangeFits(f.Address, f.Quantity) {
			return QuantityOutOfRange, "range runs past address 65535"
		}
	case 5, 6, 22:
		return parseWriteSingle(f, pdu, fc)
	case 7, 11, 12, 17:
		return fixed(pdu, 1)
	case 8:
		return parseDiagnostics(pdu)
	case 15, 16:
		if len(pdu) < 6 {
			return MalformedPDU, "write multiple pdu truncated before the byte count"
		}
		f.Address = be16(pdu[1], pdu[2])
		f.Quantity = be16(pdu[3], pdu[4])
		bc := int(pdu[5])
		if len(pdu) != 6+bc {
			return InvalidLength, "write multiple byte count disagrees with the mbap length"
		}
		if c, r := writeRange(f, fc); c != "" {
			return c, r
		}
		want := 2 * int(f.Quantity)
		if fc == 15 {
			want = (int(f.Quantity) + 7) / 8
		}
		if bc != want {
			return MalformedPDU, "write multiple byte count disagrees with the quantity"
		}
	case 20:
		if len(pdu) < 9 {
			return MalformedPDU, "fc 20 pdu truncated before its first sub-request"
		}
		bc := int(pdu[1])
		if len(pdu) != 2+bc {
			return InvalidLength, "fc 20 byte count disagrees with the mbap length"
		}
		if bc%7 != 0 {
			return MalformedPDU, "fc 20 byte count is not a whole number of 7-byte sub-requests"
		}
		for i := 2; i+7 <= len(pdu); i += 7 {
			if pdu[i] != 6 {
				return MalformedPDU, "fc 20 reference type is not 6"
			}
		}
	case 21:
		return parseWriteFile(pdu)
	case 23:
		if len(pdu) < 10 {
			return MalformedPDU, "fc 23 pdu truncated before the byte count"
		}
		f.Address = be16(pdu[1], pdu[2])
		f.Quantity = be16(pdu[3], pdu[4])
		f.WriteAddress = be16(pdu[5], pdu[6])
		f.WriteQuantity = be16(pdu[7], pdu[8])
		bc := int(pdu[9])
		if len(pdu) != 10+bc {
			return InvalidLength, "fc 23 byte count disagrees with the mbap length"
		}
		if f.Quantity < 1 || f.Quantity > maxReadRegisters {
			return QuantityOutOfRange, "fc 23 read quantity beyond the spec's limit"
		}
		if f.WriteQuantity < 1 || f.WriteQuantity > maxRWWriteRegs {
			return QuantityOutOfRange, "fc 23 write quantity beyond the spec's limit"
		}
		if !rangeFits(f.Address, f.Quantity) || !rangeFits(f.WriteAddress, f.WriteQuantity) {
			return QuantityOutOfRange, "range runs past address 65535"
		}
		if bc != 2*int(f.WriteQuantity) {
			return MalformedPDU, "fc 23 byte count disagrees with the write quantity"
		}
	case 24:
		if c, r := fixed(pdu, 3); c != "" {
			return c, r
		}
		f.Address = be16(pdu[1], pdu[2])
		f.Quantity = 1
	case 43:
		mei, c, r := parseMEI(pdu)
		if c != "" || mei == 13 {
			return c, r
		}
		if c, r := fixed(pdu, 4); c != "" {
			return c, r
		}
		if code := pdu[2]; code < 1 || code > 4 {
			return MalformedPDU, "fc 43/14 read device id code outside 1..4"
		}
	}
	return "", ""
}

// exceptionCode reports whether code is defined; 7 (negative acknowledge) comes from
// earlier editions of the spec and is still sent by libmodbus-based servers.
func exceptionCode(code uint8) bool {
	switch code {
	case 1, 2, 3, 4, 5, 6, 7, 8, 10, 11:
		return true
	}
	return false
}

func parseResponse(f *Frame, pdu []byte) (Class, string) {
	fc := pdu[0]
	if fc&0x80 != 0 {
		base := fc &^ 0x80
		if !known(base) {
			return UnknownFunctionCode, "exception for a function code that is not public"
		}
		describe(f, base)
		f.Exception = true
		if len(pdu) >= 2 {
			f.ExceptionCode = pdu[1]
		}
		if c, r := fixed(pdu, 2); c != "" {
			return c, r
		}
		if !exceptionCode(f.ExceptionCode) {
			return MalformedPDU, "exception code is not defined"
		}
		return "", ""
	}
	if !known(fc) {
		return UnknownFunctionCode, "function code is not public"
	}
	describe(f, fc)
	switch fc {
	case 1, 2, 3, 4, 23:
		if len(pdu) < 2 {
			return MalformedPDU, "read response truncated before the byte count"
		}
		bc := int(pdu[1])
		if len(pdu) != 2+bc {
			return InvalidLength, "read response byte count disagrees with the mbap length"
		}
		if fc <= 2 {
			f.Quantity = uint16(8 * bc)
			if bc < 1 || bc > maxReadBits/8 {
				return QuantityOutOfRange, "read bits response carries a count beyond the spec's limit"
			}
			return "", ""
		}
		f.Quantity = uint16(bc / 2)
		if bc < 2 || bc > 2*maxReadRegisters {
			return QuantityOutOfRange, "read registers response carries a count beyond the spec's limit"
		}
		if bc%2 != 0 {
			return MalformedPDU, "read registers response byte count is odd"
		}
	case 5, 6, 22:
		return parseWriteSingle(f, pdu, fc)
	case 7:
		return fixed(pdu, 2)
	case 8:
		return parseDiagnostics(pdu)
	case 11:
		return fixed(pdu, 5)
	case 12:
		if len(pdu) < 8 {
			return MalformedPDU, "fc 12 response truncated before the events"
		}
		bc := int(pdu[1])
		if len(pdu) != 2+bc {
			return InvalidLength, "fc 12 byte count disagrees with the mbap length"
		}
		if bc > 6+maxEventBytes {
			return MalformedPDU, "fc 12 response carries more than 64 events"
		}
	case 15, 16:
		if c, r := fixed(pdu, 5); c != "" {
			return c, r
		}
		f.Address = be16(pdu[1], pdu[2])
		f.Quantity = be16(pdu[3], pdu[4])
		if c, r := writeRange(f, fc); c != "" {
			return c, r
		}
	case 17:
		if len(pdu) < 3 {
			return MalformedPDU, "fc 17 response truncated before the run indicator"
		}
		if len(pdu) != 2+int(pdu[1]) {
			return InvalidLength, "fc 17 byte count disagrees with the mbap length"
		}
	case 20:
		if len(pdu) < 6 {
			return MalformedPDU, "fc 20 response truncated before its first record"
		}
		if len(pdu) != 2+int(pdu[1]) {
			return InvalidLength, "fc 20 byte count disagrees with the mbap length"
		}
		// Each sub-response: its length L (reference type and data), type 6, L-1 data bytes
		// holding whole registers.
		for i := 2; i < len(pdu); {
			l := int(pdu[i])
			if l < 3 || l%2 != 1 {
				return MalformedPDU, "fc 20 sub-response length is not 1 + whole registers"
			}
			if len(pdu)-i-1 < l {
				return MalformedPDU, "fc 20 sub-responses exceed the byte count"
			}
			if pdu[i+1] != 6 {
				return MalformedPDU, "fc 20 reference type is not 6"
			}
			i += 1 + l
		}
	case 21:
		return parseWriteFile(pdu)
	case 24:
		if len(pdu) < 5 {
			return MalformedPDU, "fc 24 response truncated before the fifo count"
		}
		bc := int(be16(pdu[1], pdu[2]))
		if len(pdu) != 3+bc {
			return InvalidLength, "fc 24 byte count disagrees with the mbap length"
		}
		count := be16(pdu[3], pdu[4])
		f.Quantity = count
		if count > maxFIFOCount {
			return QuantityOutOfRange, "fc 24 fifo count above 31"
		}
		if bc != 2+2*int(count) {
			return MalformedPDU, "fc 24 byte count disagrees with the fifo count"
		}
	case 43:
		mei, c, r := parseMEI(pdu)
		if c != "" || mei == 13 {
			return c, r
		}
		return parseDeviceID(pdu)
	}
	return "", ""
}

// parseDeviceID checks an FC 43/14 response: MEI type, read device id code, conformity
// level, more follows, next object id, number of objects, then objects of id, length,
// value.
func parseDeviceID(pdu []byte) (Class, string) {
	if len(pdu) < 7 {
		return MalformedPDU, "fc 43/14 response truncated before the object list"
	}
	n := int(pdu[6])
	i := 7
	for k := 0; k < n; k++ {
		if len(pdu)-i < 2 || len(pdu)-i-2 < int(pdu[i+1]) {
			return InvalidLength, "fc 43/14 object list runs past the mbap length"
		}
		i += 2 + int(pdu[i+1])
	}
	if i != len(pdu) {
		return InvalidLength, "fc 43/14 object list ends before the mbap length"
	}
	if code := pdu[2]; code < 1 || code > 4 {
		return MalformedPDU, "fc 43/14 read device id code outside 1..4"
	}
	switch pdu[3] {
	case 0x01, 0x02, 0x03, 0x81, 0x82, 0x83:
	default:
		return MalformedPDU, "fc 43/14 conformity level is not defined"
	}
	if pdu[4] != 0x00 && pdu[4] != 0xFF {
		return MalformedPDU, "fc 43/14 more follows is neither 0x00 nor 0xff"
	}
	if pdu[2] == 4 && n != 1 {
		return MalformedPDU, "fc 43/14 individual access returns other than one object"
	}
	return "", ""
}

// Splitter cuts a TCP byte stream into whole ADUs, however the stream was segmented: a
// frame split over several reads, several frames in one read. It holds at most 2*MaxADU
// bytes in a fixed array, so it never allocates and a peer cannot make it grow. The zero
// value is ready to use; a Splitter is not safe for concurrent use.
//
// Use it in a loop: read into Space (or hand bytes to Feed), Commit what was read, then
// call Next until it returns ok false. After Next returns ok false with a nil error,
// Space is at least MaxADU bytes long, so a reader always makes progress.
type Splitter struct {
	buf        [2 * MaxADU]byte
	start, end int // buffered bytes are buf[start:end]
	err        error
}

// Space returns the free tail of the buffer for a reader to fill; the bytes it fills
// count once passed to Commit. It moves the buffered bytes to the front, so ADUs that
// Next returned earlier are no longer valid.
func (s *Splitter) Space() []byte {
	if s.start > 0 {
		s.end = copy(s.buf[:], s.buf[s.start:s.end])
		s.start = 0
	}
	return s.buf[s.end:]
}

// Commit adds the first n bytes of the last Space to the buffered stream. It panics when
// n is negative or larger than that Space, which only a programming error can cause.
func (s *Splitter) Commit(n int) {
	if n < 0 || n > len(s.buf)-s.end {
		panic("dpi: Splitter.Commit beyond Space")
	}
	s.end += n
}

// Feed copies as much of p as fits into the buffer and returns how many bytes it took;
// the caller feeds the rest after draining Next. Like Space, it invalidates ADUs that
// Next returned earlier.
func (s *Splitter) Feed(p []byte) int {
	n := copy(s.Space(), p)
	s.end += n
	return n
}

// Next returns the next whole ADU, which aliases the buffer and is valid until the next
// Space or Feed; ok is false when the buffered bytes hold no whole ADU yet. Once the
// stream cannot be framed (an MBAP length outside 2..254) it returns that *FrameError
// every time, as resynchronising on a byte stream would be a guess.
func (s *Splitter) Next() (adu []byte, ok bool, err error) {
	if s.err != nil {
		return nil, false, s.err
	}
	buffered := s.buf[s.start:s.end]
	n, err := ADULen(buffered)
	if err != nil {
		s.err = err
		return nil, false, err
	}
	if n == 0 || n > len(buffered) {
		return nil, false, nil
	}
	s.start += n
	return buffered[:n:n], true, nil
}

// Buffered returns how many bytes are held that Next has not returned yet: a partial
// frame at the end of a stream.
func (s *Splitter) Buffered() int { return s.end - s.start }

// Reset empties the buffer and forgets a framing error, for reuse on a new connection.
func (s *Splitter) Reset() { s.start, s.end, s.err = 0, 0, nil }
