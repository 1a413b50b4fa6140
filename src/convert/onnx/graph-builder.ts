/**
 * A small ONNX graph builder over onnx-proto: add inputs, initializers and nodes op by op, then write
 * `<name>.onnx` plus one external-data file that holds every large initializer.
 *
 * Weights are appended to the data file as they are added (page-aligned, so onnxruntime can map them)
 * and only their offsets are kept, so building a graph for a 16 GB checkpoint holds one tensor at a time.
 */
import fs from 'node:fs';
import path from 'node:path';
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
type TensorProto = InstanceType<typeof onnx.TensorProto>;

export type ElemType = 'float32' | 'float16' | 'int64' | 'int32' | 'uint8' | 'int8' | 'bool';

const ELEM_TYPE: Record<ElemType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  float16: onnx.TensorProto.DataType.FLOAT16,
  int64: onnx.TensorProto.DataType.INT64,
  int32: onnx.TensorProto.DataType.INT32,
  uint8: onnx.TensorProto.DataType.UINT8,
  int8: onnx.TensorProto.DataType.INT8,
  bool: onnx.TensorProto.DataType.BOOL,
};

export type TensorData = Float32Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array | Int8Array;

/** A float attribute (plain numbers are ints, as most ONNX attributes are). */
export interface FloatAttr {
  float: number;
}
export const float = (value: number): FloatAttr => ({ float: value });
export type AttrValue = number | number[] | string | FloatAttr | FloatAttr[];

/** A dimension: a fixed size or a symbolic name. */
export type Dim = number | string;

/** Initializers smaller than this stay inside the .onnx file. */
const INLINE_LIMIT_BYTES = 1024;
/** External data offsets are aligned so that onnxruntime can memory-map them. */
const DATA_ALIGNMENT = 4096;

export interface GraphBuilderOptions {
  graphName: string;
  /** Absolute path of the .onnx file to write; the data file is `<modelPath>.data`. */
  modelPath: string;
  /** Opset of the default domain. */
  opset?: number;
}

/**
 * Builds one graph: `write` adds its nodes, then the .onnx file is written. After an error the data file is
 * closed and removed, so that nothing half-written stays.
 */
export function buildGraph(options: GraphBuilderOptions, write: (g: GraphBuilder) => void): { modelBytes: number; dataBytes: number } {
  const g = new GraphBuilder(options);
  try {
    write(g);
    return g.finish();
  } catch (error) {
    g.abort();
    fs.rmSync(g.dataPath, { force: true });
    throw error;
  }
}

export class GraphBuilder {
  readonly modelPath: string;
  readonly dataPath: string;
  private readonly graphName: string;
  private readonly opset: number;
  private readonly inputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  private readonly outputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  private readonly nodes: InstanceType<typeof onnx.NodeProto>[] = [];
  private readonly initializers: TensorProto[] = [];
  private readonly usedNames = new Set<string>();
  private readonly domains = new Set<string>();
  private dataFd: number;
  private dataOffset = 0;
  private nodeCounter = 0;
  private finished = false;

  constructor(options: GraphBuilderOptions) {
    this.graphName = options.graphName;
    this.modelPath = options.modelPath;
    this.dataPath = `${options.modelPath}.data`;
    this.opset = options.opset ?? 21;
    this.dataFd = fs.openSync(this.dataPath, 'w');
  }

  /** A fresh value name built from `hint`. */
  name(hint: string): string {
    let candidate = hint;
    for (let i = 1; this.usedNames.has(candidate); i++) candidate = `${hint}_${i}`;
    this.usedNames.add(candidate);
    return candidate;
  }

  input(name: string, type: ElemType, dims: Dim[]): string {
    this.claim(name);
    this.inputs.push(valueInfo(name, type, dims));
    return name;
  }

  /** Declares `value` as a graph output called `name` (an Identity is added when the names differ). */
  output(value: string, name: string, type: ElemType, dims: Dim[]): string {
    if (value !== name) {
      this.claim(name);
      this.nodes.push(onnx.NodeProto.create({ opType: 'Identity', input: [value], output: [name], name: `Identity_${name}` }));
    }
    this.outputs.push(valueInfo(name, type, dims));
    return name;
  }

  /** Adds a constant tensor; large ones go to the external data file right away. */
  initializer(hint: string, type: ElemType, dims: number[], data: TensorData): string {
    const count = dims.reduce((a, b) => a * b, 1);
    if (data.length !== count) throw new Error(`initializer ${hint}: ${data.length} values for dims [${dims.join(',')}]`);
    const name = this.name(hint);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const tensor = onnx.TensorProto.create({ name, dims, dataType: ELEM_TYPE[type] });
    if (bytes.byteLength < INLINE_LIMIT_BYTES) {
      tensor.rawData = Uint8Array.from(bytes);
    } else {
      this.dataOffset = Math.ceil(this.dataOffset / DATA_ALIGNMENT) * DATA_ALIGNMENT;
      writeAll(this.dataFd, bytes, this.dataOffset);
      tensor.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
      tensor.externalData = [
        onnx.StringStringEntryProto.create({ key: 'location', value: path.basename(this.dataPath) }),
        onnx.StringStringEntryProto.create({ key: 'offset', value: String(this.dataOffset) }),
        onnx.StringStringEntryProto.create({ key: 'length', value: String(bytes.byteLength) }),
      ];
      this.dataOffset += bytes.byteLength;
    }
    this.initializers.push(tensor);
    return name;
  }

  /** Small int64 constants (shapes, axes, indices). */
  int64s(hint: string, values: number[], dims: number[] = [values.length]): string {
    return this.initializer(hint, 'int64', dims, BigInt64Array.from(values.map((v) => BigInt(v))));
  }

  /** Small float32 constants (a scalar by default). */
  floats(hint: string, values: number[], dims: number[] = values.length === 1 ? [] : [values.length]): string {
    return this.initializer(hint, 'float32', dims, Float32Array.from(values));
  }

  /** Adds a node and returns its output names (`outputs` new names are made from the op type). */
  node(
    opType: string,
    inputs: string[],
    attributes: Record<string, AttrValue> = {},
    options: { outputs?: number | string[]; domain?: string; hint?: string } = {},
  ): string[] {
    const outputSpec = options.outputs ?? 1;
    const hint = options.hint ?? opType;
    const outputs = typeof outputSpec === 'number'
      ? Array.from({ length: outputSpec }, (_, i) => this.name(outputSpec === 1 ? hint : `${hint}_out${i}`))
      : outputSpec.map((n) => (n === '' ? '' : (this.claim(n), n)));
    const domain = options.domain ?? '';
    if (domain) this.domains.add(domain);
    this.nodes.push(
      onnx.NodeProto.create({
        opType,
        domain,
        input: inputs,
        output: outputs,
        name: `${opType}_${this.nodeCounter++}`,
        attribute: Object.entries(attributes).map(([key, value]) => attribute(key, value)),
      }),
    );
    return outputs;
  }

  /** `node` for the common single-output case. */
  op(opType: string, inputs: string[], attributes: Record<string, AttrValue> = {}, hint?: string, domain?: string): string {
    return this.node(opType, inputs, attributes, { hint, domain })[0];
  }

  /** Writes the .onnx file and closes the data file. Returns the model's byte size. */
  finish(): { modelBytes: number; dataBytes: number } {
    if (this.finished) throw new Error('graph already written');
    this.finished = true;
    fs.closeSync(this.dataFd);
    const opsetImport = [onnx.OperatorSetIdProto.create({ domain: '', version: this.opset })];
    for (const domain of this.domains) opsetImport.push(onnx.OperatorSetIdProto.create({ domain, version: 1 }));
    const model = onnx.ModelProto.create({
      irVersion: 10,
      producerName: 'dvl',
      opsetImport,
      graph: onnx.GraphProto.create({
        name: this.graphName,
        input: this.inputs,
        output: this.outputs,
        node: this.nodes,
        initializer: this.initializers,
      }),
    });
    const encoded = onnx.ModelProto.encode(model).finish();
    fs.writeFileSync(this.modelPath, encoded);
    return { modelBytes: encoded.byteLength, dataBytes: this.dataOffset };
  }

  /** Closes the data file without writing the model (after an error). */
  abort(): void {
    if (!this.finished) {
      this.finished = true;
      fs.closeSync(this.dataFd);
    }
  }

  private claim(name: string): void {
    if (this.usedNames.has(name)) throw new Error(`duplicate value name ${name}`);
    this.usedNames.add(name);
  }
}

function writeAll(fd: number, bytes: Uint8Array, position: number): void {
  let written = 0;
  while (written < bytes.byteLength) {
    written += fs.writeSync(fd, bytes, written, bytes.byteLength - written, position + written);
  }
}

function valueInfo(name: string, type: ElemType, dims: Dim[]) {
  return onnx.ValueInfoProto.create({
    name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({
        elemType: ELEM_TYPE[type],
        shape: onnx.TensorShapeProto.create({
          dim: dims.map((d) =>
            typeof d === 'number'
              ? onnx.TensorShapeProto.Dimension.create({ dimValue: d })
              : onnx.TensorShapeProto.Dimension.create({ dimParam: d }),
          ),
        }),
      }),
    }),
  });
}

function attribute(name: string, value: AttrValue) {
  const { AttributeType } = onnx.AttributeProto;
  if (typeof value === 'string') {
    return onnx.AttributeProto.create({ name, type: AttributeType.STRING, s: new TextEncoder().encode(value) });
  }
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new Error(`attribute ${name}: use float() for non-integer ${value}`);
    return onnx.AttributeProto.create({ name, type: AttributeType.INT, i: value });
  }
  if (Array.isArray(value)) {
    if (value.length > 0 && typeof value[0] === 'object') {
      return onnx.AttributeProto.create({ name, type: AttributeType.FLOATS, floats: (value as FloatAttr[]).map((v) => v.float) });
    }
    return onnx.AttributeProto.create({ name, type: AttributeType.INTS, ints: value as number[] });
  }
  return onnx.AttributeProto.create({ name, type: AttributeType.FLOAT, f: value.float });
}
