import type { FormInstance, FormRules } from 'element-plus';
import { nextTick, ref, type Ref } from 'vue';
import { useFieldErrors } from './errors.ts';

/**
 * A create/edit dialog (shown by FormDialog.vue): `show(row)` fills the form from the row (none:
 * a new one) and opens it; Save checks the rules, awaits `submit` and closes. Field errors from
 * the API stay in `errors.fields` for each `<el-form-item :error>`; any other error is a message.
 */
export function useFormDialog<Row>(options: {
  model: object;
  rules?: Ref<FormRules>;
  fill: (row: Row | null) => void;
  submit: (editing: Row | null) => Promise<void>;
}) {
  const open = ref(false);
  const editing = ref(null) as Ref<Row | null>;
  const saving = ref(false);
  /** Counts the openings, for FormDialog's `remount`. */
  const openings = ref(0);
  const { errors, take, clear } = useFieldErrors();

  function show(row?: Row) {
    editing.value = row ?? null;
    options.fill(editing.value);
    clear();
    openings.value++;
    open.value = true;
  }

  async function save(form: FormInstance | undefined) {
    clear();
    if (!(await form?.validate().catch(() => false))) return;
    saving.value = true;
    try {
      await options.submit(editing.value);
      open.value = false;
    } catch (err) {
      take(err);
      // A field the server refused may be far down a long form (the node form): show it.
      await nextTick();
      document.querySelector('.el-dialog .el-form-item.is-error')?.scrollIntoView({ block: 'center', behavior: 'smooth' });
    } finally {
      saving.value = false;
    }
  }

  return { model: options.model, rules: options.rules, open, editing, saving, openings, errors, show, save };
}

export type FormDialog<Row> = ReturnType<typeof useFormDialog<Row>>;
