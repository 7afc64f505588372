// Preloaded into the reference server (node -r), which has no host option: every listen() goes
// to 127.0.0.1, and the chosen port is printed as "PORT <n>" for the test that started it.
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const server = this;
  if (typeof args[0] === "number" || (typeof args[0] === "string" && /^\d+$/.test(args[0]))) {
    let rest = args.slice(1);
    if (typeof rest[0] === "string") rest = rest.slice(1);
    args = [args[0], "127.0.0.1", ...rest];
  } else if (args[0] && typeof args[0] === "object") {
    args[0] = { ...args[0], host: "127.0.0.1" };
  }
  server.once("listening", () => {
    const address = server.address();
    if (address && typeof address === "object") console.log(`PORT ${address.port}`);
  });
  return listen.apply(server, args);
};
// Stop with the test: exit when standard input closes.
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
