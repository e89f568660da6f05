/** Markdown tables and the report being built. */
export function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const lines = [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`];
  for (const r of rows) lines.push(`| ${r.map((c) => c.replaceAll('|', '\\|')).join(' | ')} |`);
  return lines.join('\n');
}

export class Report {
  private readonly parts: string[] = [];
  add(text: string): void {
    this.parts.push(text);
    process.stdout.write(text + '\n\n');
  }
  text(): string {
    return this.parts.join('\n\n') + '\n';
  }
}
