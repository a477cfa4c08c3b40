// Command edged is the edge inspection daemon: it reads line devices, runs ONNX models on
// what they see, publishes verdicts over MQTT and serves metrics and the admin API.
package main

import (
	"errors"
	"fmt"
	"os"
)

// errUsage marks an error whose message is already the usage text.
var errUsage = errors.New("usage")

const usage = `edged: edge AI inspection runtime

usage:
  edged run [-c FILE]              start inspecting (embedded defaults without -c)
  edged validate -c FILE [-probe]  check a config file (and with -probe, the devices) and exit
  edged model COMMAND              keygen, sign, verify; push, activate, rollback,
                                   list on boxes or a fleet (edged model help)
  edged opcua cert -out DIR        make a self-signed OPC UA client certificate and key
  edged sim dump --n N --out DIR   write a labelled data set from the line simulator
                                   (--kind vibration: vibration samples as CSV)
  edged hw [-root DIR] [-c FILE]   hardware profile and why, provider libraries, power
                                   mode, board power
  edged bench [flags]              measure pipeline throughput against bare inference
  edged version                    print the version
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:])
	case "validate":
		err = cmdValidate(args[1:])
	case "sim":
		err = cmdSim(args[1:])
	case "model":
		err = cmdModel(args[1:])
	case "hw":
		err = cmdHW(args[1:])
	case "opcua":
		err = cmdOPCUA(args[1:])
	case "bench":
		err = cmdBench(args[1:])
	case "version":
		fmt.Println("edged", version())
		return 0
	case "-h", "--help", "help":
		fmt.Print(usage)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "edged: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		if errors.Is(err, errUsage) {
			return 2
		}
		fmt.Fprintf(os.Stderr, "edged %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
