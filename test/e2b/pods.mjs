// Drives the E2B front with the real E2B JS SDK (the package named by
// E2B_PACKAGE) on sandboxes that are Pods, one STEP at a time, with the key
// E2B_API_KEY against E2B_API_URL. Prints one JSON line of what it saw;
// exits non-zero on the first broken expectation.
//   STEP=create SANDBOX_ID=<pod>: snapshot the Pod, clone it, read the clone.
//   STEP=other  SANDBOX_ID=<clone>: another key does not find the clone.
//   STEP=kill   SANDBOX_ID=<clone>: the owner kills it.
//   STEP=pause  SANDBOX_ID=<clone>: the owner pauses it; a second pause finds
//               it paused; it reads and lists as paused.
//   STEP=other-paused SANDBOX_ID=<clone>: another key can neither pause,
//               resume nor kill it.
//   STEP=resume SANDBOX_ID=<clone>: the owner's connect resumes it, same ID.
import assert from 'node:assert/strict'

const { Sandbox } = await import(process.env.E2B_PACKAGE || 'e2b')
const sandboxId = process.env.SANDBOX_ID
const notFound = (err) => /NotFound/.test(err.name) || /not found/i.test(err.message)
const out = {}

switch (process.env.STEP) {
  case 'create': {
    const sbx = await Sandbox.connect(sandboxId)
    const snap = await sbx.createSnapshot()
    assert.ok(snap.snapshotId, 'createSnapshot returns an id')
    const clone = await Sandbox.create(snap.snapshotId)
    assert.ok(clone.sandboxId && clone.sandboxId !== sandboxId)
    const info = await Sandbox.getInfo(clone.sandboxId)
    assert.equal(info.sandboxId, clone.sandboxId)
    assert.equal(info.state, 'running')
    assert.ok(!Number.isNaN(info.startedAt.getTime()), 'startedAt is a time')
    Object.assign(out, {
      snapshotId: snap.snapshotId, cloneId: clone.sandboxId, templateId: info.templateId,
      cpuCount: info.cpuCount, memoryMB: info.memoryMB, startedAt: info.startedAt.toISOString(),
    })
    break
  }
  case 'other':
    await assert.rejects(Sandbox.getInfo(sandboxId), notFound, 'getInfo of another key\'s sandbox')
    await assert.rejects(Sandbox.connect(sandboxId), notFound, 'connect to another key\'s sandbox')
    assert.equal(await Sandbox.kill(sandboxId), false, 'kill of another key\'s sandbox finds nothing')
    out.refused = true
    break
  case 'kill':
    assert.equal(await Sandbox.kill(sandboxId), true)
    out.killed = true
    break
  case 'pause': {
    assert.equal(await Sandbox.pause(sandboxId, { requestTimeoutMs: 180_000 }), true, 'pause pauses')
    assert.equal(await Sandbox.pause(sandboxId), false, 'a second pause finds it paused (409)')
    const info = await Sandbox.getInfo(sandboxId)
    assert.equal(info.state, 'paused')
    const paused = []
    const pager = Sandbox.list({ query: { state: ['paused'] } })
    while (pager.hasNext) paused.push(...await pager.nextItems())
    assert.ok(paused.some((s) => s.sandboxId === sandboxId && s.state === 'paused'), `listed as paused: ${JSON.stringify(paused)}`)
    const running = []
    const runningPager = Sandbox.list({ query: { state: ['running'] } })
    while (runningPager.hasNext) running.push(...await runningPager.nextItems())
    assert.ok(!running.some((s) => s.sandboxId === sandboxId), 'not listed as running')
    out.paused = true
    break
  }
  case 'other-paused':
    await assert.rejects(Sandbox.pause(sandboxId), notFound, 'pause of another key\'s sandbox')
    await assert.rejects(Sandbox.connect(sandboxId), notFound, 'resume of another key\'s paused sandbox')
    assert.equal(await Sandbox.kill(sandboxId), false, 'kill of another key\'s paused sandbox finds nothing')
    out.refused = true
    break
  case 'resume': {
    const sbx = await Sandbox.connect(sandboxId, { requestTimeoutMs: 180_000 })
    assert.equal(sbx.sandboxId, sandboxId, 'the same ID')
    out.resumed = true
    break
  }
  default:
    throw new Error(`unknown STEP ${process.env.STEP}`)
}
console.log(JSON.stringify(out))
