export const BUILD_INPUTS: string[];
export function hashBuildInputs(): string;
