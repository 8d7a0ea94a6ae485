// The seed's scenario through the official TypeScript SDK client (@modelcontextprotocol/sdk):
// two agents, one migration number each, a stale note refused and redone, one claim winning.
// Usage: node scenario.mjs CONFIG_JSON   (see tests/test_interop.py)
//   {"transport": "stdio", "agents": {"alice": {"command", "args", "cwd", "env"}, "bob": {...}}}
//   {"transport": "http", "url": "http://…/mcp", "agents": {"alice": {"token", "worktree"}, "bob": {...}}}
// Prints one JSON object with what each step answered; the Python test judges it.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const config = JSON.parse(process.argv[2]);

async function connect(name) {
  const a = config.agents[name];
  const client = new Client({ name: `interop-${name}`, version: "1.0.0" });
  let transport;
  if (config.transport === "stdio") {
    transport = new StdioClientTransport({ command: a.command, args: a.args, cwd: a.cwd, env: a.env, stderr: "inherit" });
  } else {
    transport = new StreamableHTTPClientTransport(new URL(config.url), {
      requestInit: { headers: { Authorization: `Bearer ${a.token}` } },
    });
  }
  await client.connect(transport);
  return client;
}

function body(r) {
  if (r.isError) throw new Error(`tool error: ${r.content?.[0]?.text}`);
  return r.structuredContent;
}

function text(r) {
  return { isError: Boolean(r.isError), text: r.content?.[0]?.text ?? "" };
}

const extra = (name) => (config.agents[name].worktree ? { worktree: config.agents[name].worktree } : {});

const alice = await connect("alice");
const bob = await connect("bob");
const out = {};
try {
  const tools = await alice.listTools();
  out.tools = tools.tools.map((t) => t.name);
  out.whoami = { alice: body(await alice.callTool({ name: "whoami", arguments: {} })), bob: body(await bob.callTool({ name: "whoami", arguments: {} })) };

  // 1. Both take the next migration number at once.
  const [ma, mb] = await Promise.all([
    alice.callTool({ name: "migration_new", arguments: { slug: "add_users", dir: "db/migrations", ...extra("alice") } }),
    bob.callTool({ name: "migration_new", arguments: { slug: "add_orders", dir: "db/migrations", ...extra("bob") } }),
  ]);
  out.migrations = { alice: body(ma), bob: body(mb) };

  // 2. A note both read; alice changes it; bob's write over his old read is refused, then redone.
  body(await alice.callTool({ name: "write", arguments: { key: "notes/schema", value: "users: id, email" } }));
  body(await bob.callTool({ name: "read", arguments: { key: "notes/schema" } }));
  body(await alice.callTool({ name: "read", arguments: { key: "notes/schema" } }));
  body(await alice.callTool({ name: "write", arguments: { key: "notes/schema", value: "users: id, email, name" } }));
  out.stale = text(await bob.callTool({ name: "write", arguments: { key: "notes/schema", value: "users: id, email, created_at" } }));
  out.reread = body(await bob.callTool({ name: "read", arguments: { key: "notes/schema" } }));
  out.redone = body(await bob.callTool({ name: "write", arguments: { key: "notes/schema", value: "users: id, email, name, created_at" } }));

  // 3. One task, both claim it at once.
  const task = body(await alice.callTool({ name: "task_add", arguments: { title: "Add the users table" } }));
  await alice.callTool({ name: "task_ready", arguments: {} });
  await bob.callTool({ name: "task_ready", arguments: {} });
  const [ca, cb] = await Promise.all([
    alice.callTool({ name: "task_claim", arguments: { id: task.id } }),
    bob.callTool({ name: "task_claim", arguments: { id: task.id } }),
  ]);
  out.task = task.id;
  out.claims = { alice: text(ca), bob: text(cb) };
} finally {
  await alice.close();
  await bob.close();
}
process.stdout.write(JSON.stringify(out) + "\n");
