// Drives the E2B front with the real E2B JS SDK (the package named by
// E2B_PACKAGE), against E2B_API_URL with E2B_API_KEY, on the running
// sandbox SANDBOX_ID. Prints one JSON line of what it saw; exits non-zero
// on the first broken expectation.
import assert from 'node:assert/strict'

const { Sandbox } = await import(process.env.E2B_PACKAGE || 'e2b')
const sandboxId = process.env.SANDBOX_ID
const out = {}

// An instance from connect, then its snapshot.
const sbx = await Sandbox.connect(sandboxId)
assert.equal(sbx.sandboxId, sandboxId)
const first = await sbx.createSnapshot()
assert.ok(first.snapshotId, 'createSnapshot returns an id')
assert.deepEqual(first.names, [])
out.snapshotId = first.snapshotId

// listSnapshots sees it.
const listed = await Sandbox.listSnapshots({ sandboxId }).nextItems()
assert.ok(listed.some((s) => s.snapshotId === first.snapshotId), 'listSnapshots lists the new snapshot')

// Two more, through the static call, one named.
const second = await Sandbox.createSnapshot(sandboxId, { name: 'second' })
const third = await Sandbox.createSnapshot(sandboxId)
assert.deepEqual(second.names, ['second'])

// limit 1 walks every page, newest first.
const pager = Sandbox.listSnapshots({ sandboxId, limit: 1 })
const walked = []
while (pager.hasNext) {
  const page = await pager.nextItems()
  assert.equal(page.length, 1, 'one item a page')
  walked.push(page[0].snapshotId)
}
assert.deepEqual(walked, [third.snapshotId, second.snapshotId, first.snapshotId])
out.pages = walked.length

// A clone from the first snapshot.
const clone = await Sandbox.create(first.snapshotId)
assert.ok(clone.sandboxId && clone.sandboxId !== sandboxId)
out.cloneId = clone.sandboxId

// deleteSnapshot: true, then false.
assert.equal(await Sandbox.deleteSnapshot(second.snapshotId), true)
assert.equal(await Sandbox.deleteSnapshot(second.snapshotId), false)
const after = []
const again = Sandbox.listSnapshots({ sandboxId })
while (again.hasNext) after.push(...(await again.nextItems()).map((s) => s.snapshotId))
assert.deepEqual(after, [third.snapshotId, first.snapshotId])
out.remaining = after

console.log(JSON.stringify(out))
