/**
 * A multipart/form-data body as a standard parser reads it (undici's, the one behind
 * fetch's Response), for the fakes: a parser independent of the one body builder the
 * publishers use, so a malformed body fails the fake as it would fail the network.
 * Null when the body does not parse.
 */
export async function readMultipart(bytes: Buffer, contentType: string): Promise<FormData | null> {
  try {
    // eslint-disable-next-line @typescript-eslint/no-deprecated -- deprecated for servers taking untrusted uploads; this reads a test's own small bodies
    return await new Response(bytes, { headers: { 'content-type': contentType } }).formData();
  } catch {
    return null;
  }
}
