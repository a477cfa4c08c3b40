// An OPC UA server on node-opcua for the opcua driver's tests: secured endpoints
// (Basic256Sha256 Sign and SignAndEncrypt), username/password users, a restartable
// process, and a line's tags:
//
//   ns=1;s=Line1.Counter      Double, +1 every --period ms
//   ns=1;s=Line1.Clock        Double, the wall clock in ms at its last change, for latency
//   ns=1;s=Line1.PartPresent  Boolean, toggled every --toggle ms when above 0 (writable)
//   ns=1;s=Line1.PartID       String, a new id at each rising PartPresent (writable)
//   ns=1;s=Line1.Force        Double, writable
//   ns=1;s=Line1.Depth        Double, writable
//   ns=1;s=Line1.Reject       Boolean, writable
//   ns=1;s=Line1.Verdict      String, writable
//   ns=1;s=Line1.Count16      Int16, writable (for range checks)
//
// Flags: --port P (required), --period MS (Counter/Clock change, default 50; 0 changes
// them as fast as the event loop allows), --min-interval MS (lowers node-opcua's 50 ms
// floor of sampling and publishing intervals, for benchmarks), --toggle MS, --press 1
// (with --toggle: Force and Depth of each part as a press-fit station measures them,
// every fifth part out of the process window, and a line "part <id> force <kN> depth
// <mm>" per part), --user U --password P (default edged/secret), --trust FILE (accept only that client certificate; without it any
// client certificate is accepted). It prints "ready <endpoint>" once it listens and
// "write <name> <value>" for every value a client writes.
"use strict";

const fs = require("fs");
const path = require("path");
const os = require("os");
const { OPCUAServer, MonitoredItem, Subscription } = require("node-opcua-server");
// Dependencies of node-opcua-server, pinned through package-lock.json.
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");
const { SecurityPolicy, MessageSecurityMode } = require("node-opcua-secure-channel");
const { Variant, DataType } = require("node-opcua-variant");

function flags(argv) {
  const f = { port: 0, period: 50, "min-interval": 0, toggle: 0, user: "edged", password: "secret", trust: "", press: 0 };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, "");
    const v = argv[++i];
    if (!(k in f) || v === undefined) {
      console.error(`unknown or incomplete flag ${argv[i - 1]}`);
      process.exit(2);
    }
    f[k] = typeof f[k] === "number" ? Number(v) : v;
  }
  if (!f.port) {
    console.error("--port is required");
    process.exit(2);
  }
  return f;
}

async function main() {
  const f = flags(process.argv);
  if (f["min-interval"] > 0) {
    MonitoredItem.minimumSamplingInterval = f["min-interval"];
    Subscription.minimumPublishingInterval = f["min-interval"];
  }
  const root = path.join(process.env.XDG_CONFIG_HOME || os.tmpdir(), "edged-nodeserver");
  const pki = path.join(root, "pki");
  fs.mkdirSync(pki, { recursive: true });

  const serverCertificateManager = new OPCUACertificateManager({
    automaticallyAcceptUnknownCertificate: !f.trust,
    rootFolder: pki,
  });
  await serverCertificateManager.initialize();
  if (f.trust) {
    const trusted = path.join(pki, "trusted", "certs");
    fs.mkdirSync(trusted, { recursive: true });
    const raw = fs.readFileSync(f.trust);
    fs.writeFileSync(path.join(trusted, "client" + path.extname(f.trust)), raw);
  }

  const server = new OPCUAServer({
    port: f.port,
    hostname: "127.0.0.1",
    resourcePath: "/edged",
    serverCertificateManager,
    securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256],
    securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
    allowAnonymous: true,
    userManager: { isValidUser: (u, p) => u === f.user && p === f.password },
    buildInfo: { productName: "edged-nodeserver", buildNumber: "1" },
    serverCapabilities: f["min-interval"] > 0 ? { minSupportedSampleRate: f["min-interval"] } : undefined,
  });
  await server.initialize();

  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.getOwnNamespace();
  const line = ns.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Line1" });
  const vars = {};
  function add(name, dataType, value, writable) {
    const v = ns.addVariable({
      componentOf: line,
      nodeId: `s=Line1.${name}`,
      browseName: name,
      dataType,
      minimumSamplingInterval: 0,
      accessLevel: writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
      userAccessLevel: writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
      value: new Variant({ dataType: DataType[dataType], value }),
    });
    vars[name] = v;
    return v;
  }
  add("Counter", "Double", 0, false);
  add("Clock", "Double", now(), false);
  add("PartPresent", "Boolean", false, true);
  add("PartID", "String", "", true);
  add("Force", "Double", 12.5, true);
  add("Depth", "Double", 0.75, true);
  add("Reject", "Boolean", false, true);
  add("Verdict", "String", "", true);
  add("Count16", "Int16", 0, true);

  // Writes from clients arrive through the variables' value setters; these lines let
  // a test see what landed.
  for (const name of ["PartPresent", "PartID", "Force", "Depth", "Reject", "Verdict", "Count16"]) {
    const v = vars[name];
    const orig = v.writeValue.bind(v);
    v.writeValue = function (context, dataValue, indexRange, callback) {
      const done = (err, status) => {
        if (!err && status && status.value === 0) {
          console.log(`write ${name} ${JSON.stringify(dataValue.value.value)}`);
        }
        if (callback) callback(err, status);
      };
      const p = orig(context, dataValue, indexRange, callback ? done : undefined);
      if (p && typeof p.then === "function" && !callback) {
        return p.then((status) => {
          done(null, status);
          return status;
        });
      }
      return p;
    };
  }

  let counter = 0;
  function tick() {
    counter++;
    vars.Counter.setValueFromSource(new Variant({ dataType: DataType.Double, value: counter }));
    vars.Clock.setValueFromSource(new Variant({ dataType: DataType.Double, value: now() }));
  }
  if (f.period > 0) {
    setInterval(tick, f.period);
  } else {
    const spin = () => {
      tick();
      setImmediate(spin);
    };
    setImmediate(spin);
  }
  if (f.toggle > 0) {
    let part = 0;
    setInterval(() => {
      const present = !vars.PartPresent.readValue().value.value;
      if (present) {
        part++;
        vars.PartID.setValueFromSource(new Variant({ dataType: DataType.String, value: `P${part}` }));
        if (f.press > 0) {
          // A press-fit station: force in kN and depth in mm near the process window
          // (8..12 kN, 4.8..5.2 mm); every fifth part is pressed too hard or too
          // shallow. The values follow from the part number, so runs repeat.
          const wobble = ((part * 7919) % 100) / 100 - 0.5;
          let force = 10 + 2.4 * wobble;
          let depth = 5 + 0.24 * wobble;
          if (part % 5 === 0) {
            if (part % 10 === 0) force = 13.5 + wobble;
            else depth = 4.5 + 0.1 * wobble;
          }
          vars.Force.setValueFromSource(new Variant({ dataType: DataType.Double, value: force }));
          vars.Depth.setValueFromSource(new Variant({ dataType: DataType.Double, value: depth }));
          console.log(`part P${part} force ${force.toFixed(3)} depth ${depth.toFixed(3)}`);
        } else {
          vars.Force.setValueFromSource(new Variant({ dataType: DataType.Double, value: part * 1.5 }));
        }
      }
      vars.PartPresent.setValueFromSource(new Variant({ dataType: DataType.Boolean, value: present }));
    }, f.toggle);
  }

  await server.start();
  console.log(`ready ${server.getEndpointUrl()}`);

  const stop = async () => {
    await server.shutdown(0);
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

function now() {
  return performance.timeOrigin + performance.now();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
